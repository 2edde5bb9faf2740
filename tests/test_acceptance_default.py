"""Acceptance on the default demo world (slow: builds it on one thread, ~20 minutes).

Checks the foundation's quality bars and runs the README's main job, `featureedit demo`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from editing.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Build and benchmark the default world on one torch thread, on every machine.

    A seeded build is still not bit-identical across thread counts (float reductions), and the
    engine bars are close to some builds' figures (Reliability 0.90-1.0 on these 10 facts seen
    across builds): single-threaded builds are the ones CI measured them on (and met them).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def default_world(fe_home):
    from editing.world.build import load_world

    return load_world("default", fe_home, progress=False)


def test_default_world_quality(default_world) -> None:
    q = default_world.quality
    assert q["recall_train"] >= 0.95
    assert q["recall_heldout"] >= 0.70
    assert len(default_world.people) >= 150
    for hook, sae in q["saes"].items():
        assert sae["fvu"] <= 0.10, hook
        assert sae["l0"] <= 32, hook


def test_demo_command(default_world, capsys) -> None:
    assert main(["demo", "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fe = doc["results"]["featureedit"]
    assert fe["status"] == "succeeded"
    assert doc["checkpoint"] is not None
    assert doc["verification"]["checkpoint_prompts_leaking"] == 0
    assert doc["verification"]["base_prompts_leaking"] > 0
    assert doc["verification"]["base_samples_leaking"] > 0


@pytest.fixture(scope="module")
def bench10(default_world):
    """`featureedit bench --facts 10 --methods featureedit,neurons --json` on the default world."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(["bench", "--facts", "10", "--methods", "featureedit,neurons", "--json", "-q"])
            == 0
        )
    doc = json.loads(out.getvalue())
    return doc["summary"]["featureedit"], doc["summary"]["neurons"]


def test_featureedit_beats_neurons(bench10) -> None:
    """What holds with margin on every build of the default world seen: FeatureEdit erases more
    of the edit prompts than the neuron baseline, and keeps the rest.

    Generalization is compared without a margin (in ``test_engine_issue_bars``): the baseline's
    held-out score moves most between world builds (0.43 to 0.80 on 10 facts; a build is not
    bit-identical across machines and thread counts), FeatureEdit's stays at 0.95 to 0.97.
    """
    fe, nb = bench10
    assert fe["reliability"]["mean"] >= 0.9
    assert fe["reliability"]["mean"] > nb["reliability"]["mean"] + 0.2
    assert fe["locality"]["mean"] >= 0.95
    assert fe["delta_ppl"]["mean"] <= 0.02


def test_engine_issue_bars(bench10) -> None:
    """The engine issue's bars, as stated there (here on 10 facts; docs/benchmarks.md has 30).

    Locality is compared with the baseline's within 0.03: the default refinement (``refine =
    "flatten"``, issue #13, which asks that the setting winning its attack table be the default)
    trades Locality (on these 10 facts of the current build 0.966 against the baseline's 0.987,
    lost on other people's birth dates and addresses) for an erasure that sampling and the logit
    lens no longer recover (the baseline leaks in about a third of samples); docs/benchmarks.md
    "Seventh round" has the figures. The absolute bar (>= 0.95) is unchanged.
    """
    fe, nb = bench10
    assert fe["reliability"]["mean"] >= 0.95
    assert fe["generalization"]["mean"] >= 0.85
    assert fe["locality"]["mean"] >= 0.95
    assert fe["delta_ppl"]["mean"] <= 0.02
    assert fe["generalization"]["mean"] > nb["generalization"]["mean"]
    assert fe["locality"]["mean"] >= nb["locality"]["mean"] - 0.03


def test_default_erasure_survives_sampling(bench10) -> None:
    """Issue #13's first bar on the default: sampled continuations (temperature 1) of the edit
    and held-out prompts contain the secret at most 1 % of the time after the edit."""
    fe, _ = bench10
    assert fe["leak_rate_before"]["mean"] >= 0.5  # the unedited model does give it out
    assert fe["leak_rate_after"]["mean"] <= 0.01
