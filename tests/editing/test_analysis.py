"""Fast tests of the knowledge-microscope analyses on the small demo world (tiny settings)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from editing.analysis import ANALYSES, run_analysis
from editing.analysis.common import cohens_d, fastica, gaussian_overlap

TINY: dict[str, dict[str, Any]] = {
    "decomposition": {"n_people": 20},
    "features-vs-neurons": {"ig_steps": 2, "ks": (1, 2)},
    "monosemanticity": {"ig_steps": 2, "batch_size": 8, "n_batches": 2, "n_people": 10},
    "ranges": {"ig_steps": 2, "n_people": 8, "units_per_fact": 1},
    "dictionary-size": {"steps": 20, "n_people": 10, "expansions": (1, 2)},
}

KEYS: dict[str, tuple[str, ...]] = {
    "decomposition": ("delta_prob", "components", "layer", "summary"),
    "features-vs-neurons": ("delta_prob", "ks", "summary"),
    "monosemanticity": ("stats", "units", "summary"),
    "ranges": ("units", "concepts", "summary"),
    "dictionary-size": ("saes", "layer", "summary"),
}


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    return []


@pytest.fixture(scope="module")
def outputs(small_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every analysis run once on the small world with tiny settings (on one thread, restored
    after the module: a later test building the default world needs all of them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("analysis")
        run_analysis("all", small_model, out, n_facts=2, settings=TINY)
        yield out
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_analysis_writes_plots_and_finite_json(outputs: Path, name: str) -> None:
    res = outputs / name / "results.json"
    assert res.is_file()
    doc = json.loads(res.read_text())
    for key in KEYS[name]:
        assert key in doc
    assert list((outputs / name).glob("*.png"))
    for plot in doc["plots"]:
        assert (outputs / plot).stat().st_size > 1000
    assert all(math.isfinite(x) for x in _numbers(doc["summary"]))


def test_index_gathers_every_analysis(outputs: Path) -> None:
    html = (outputs / "index.html").read_text()
    for name in ANALYSES:
        assert f"<h2>{name}</h2>" in html


def test_cli_analyze_json(small_model, fe_home: Path, tmp_path: Path, capsys) -> None:
    from editing import cli_analysis

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_analysis.register(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(
        [
            "analyze",
            "features-vs-neurons",
            "--model",
            "demo-small",
            "--out",
            str(tmp_path),
            "--facts",
            "1",
            "--ig-steps",
            "2",
            "--json",
        ]
    )
    args.home = str(fe_home)
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["results"]) == {"features-vs-neurons"}
    assert (tmp_path / "index.html").is_file()


def test_unknown_analysis_lists_valid_names(small_model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decomposition"):
        run_analysis("nope", small_model, tmp_path)


def test_fastica_recovers_independent_sources() -> None:
    rng = np.random.default_rng(0)
    s = np.stack([rng.laplace(size=4000), rng.uniform(-1, 1, 4000)], 1)
    x = s @ np.array([[1.0, 0.5], [0.3, 1.0]]).T
    unmix, mix, mu = fastica(x)
    est = (x - mu) @ unmix.T
    corr = np.abs(np.corrcoef(est.T, s.T)[:2, 2:])
    assert corr.max(1).min() > 0.95
    assert np.allclose(est @ mix.T, x - mu, atol=1e-6)


def test_stats_helpers() -> None:
    assert gaussian_overlap(0, 1, 0, 1) == pytest.approx(1.0, abs=1e-3)
    assert gaussian_overlap(0, 1, 10, 1) < 1e-3
    assert cohens_d(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 0.0
