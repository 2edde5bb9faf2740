"""The Locality set's size (editing.evaldata.eval_data_for with an editing.registry.EvalSize)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from editing.evaldata import eval_data_for
from editing.registry import DEFAULT_EVAL_SIZE, EvalSize, ModelEntry


def _kinds(data: Any) -> Counter[str]:
    return Counter(kind for _, _, kind in data.locality)


def test_default_set_is_60_private_and_40_public_facts_times_2(small_model: Any) -> None:
    subject = small_model_subject(small_model)
    data = eval_data_for(small_model, {subject})
    assert len(data.locality) == 200
    assert _kinds(data) == {"private": 120, "public": 80}
    assert all(subject not in prompt for prompt, _, _ in data.locality)
    # the default is exactly DEFAULT_EVAL_SIZE: same seeded draw, same prompts
    assert eval_data_for(small_model, {subject}, DEFAULT_EVAL_SIZE).locality == data.locality


def test_size_sets_facts_and_prompts_per_fact(small_model: Any) -> None:
    subject = small_model_subject(small_model)
    data = eval_data_for(small_model, {subject}, EvalSize(5, 3, 1))
    assert _kinds(data) == {"private": 5, "public": 3}
    data = eval_data_for(small_model, {subject}, EvalSize(5, 3, 4))
    assert _kinds(data) == {"private": 20, "public": 12}
    # more than the world has: every fact of the others (the small world has 40 people)
    data = eval_data_for(small_model, {subject}, EvalSize(10_000, 10_000, 1))
    assert _kinds(data) == {"private": 39 * 5, "public": 39 * 2}


def test_registry_setting_is_the_default(small_model: Any) -> None:
    subject = small_model_subject(small_model)
    configured = SimpleNamespace(
        entry=replace(small_model.entry, evaluation=EvalSize(4, 2, 2)), home=small_model.home
    )
    assert len(eval_data_for(configured, {subject}).locality) == 12  # type: ignore[arg-type]
    # an explicit size (the worker's override) wins over the registry's
    explicit = eval_data_for(configured, {subject}, EvalSize(1, 1, 1))  # type: ignore[arg-type]
    assert len(explicit.locality) == 2


def test_locality_file_is_whole_unless_a_size_is_set(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "target": f"t{i}", "kind": "private"} for i in range(30)]
    rows += [{"prompt": f"q{i}", "target": f"u{i}"} for i in range(30)]  # kind defaults to public
    path = tmp_path / "locality.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    entry = ModelEntry(model_id="m", path=str(tmp_path), locality_file=str(path))
    loaded: Any = SimpleNamespace(entry=entry, home=tmp_path)
    assert len(eval_data_for(loaded, set()).locality) == 60
    data = eval_data_for(loaded, set(), EvalSize(4, 2, 3))  # at most 12 private, 6 public rows
    assert _kinds(data) == {"private": 12, "public": 6}
    prompts = [p for p, _, _ in data.locality]
    order = [r["prompt"] for r in rows]
    assert prompts == sorted(prompts, key=order.index)  # the file's order is kept
    loaded.entry = replace(entry, evaluation=EvalSize(1, 1, 1))
    assert _kinds(eval_data_for(loaded, set())) == {"private": 1, "public": 1}


def small_model_subject(loaded: Any) -> str:
    """A subject of the small world (the request's, excluded from the Locality set)."""
    from editing.world.build import load_world

    return load_world("small", loaded.home, progress=False).people[0]
