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
    # more than the world has: every fact of the others (the small world has 40 people; the
    # request's subject and its 4 control subjects are left out)
    data = eval_data_for(small_model, {subject}, EvalSize(10_000, 10_000, 1))
    assert _kinds(data) == {"private": 35 * 5, "public": 35 * 2}


def test_no_locality_row_is_about_a_control_subject(small_model: Any) -> None:
    """The refinement keeps the controls' answers: Locality must not be scored on them."""
    subject = small_model_subject(small_model)
    data = eval_data_for(small_model, {subject})
    assert len(data.control_subjects) == 4 and subject not in data.control_subjects
    assert not [p for p, _, _ in data.locality if any(c in p for c in data.control_subjects)]


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


def test_locality_file_rows_about_a_registry_control_subject_are_left_out(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Ann Lee's phone number is", "target": "1"},
        {"prompt": "Bob Roe's phone number is", "target": "2"},
    ]
    path = tmp_path / "locality.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    entry = ModelEntry(
        model_id="m", path=str(tmp_path), locality_file=str(path), control_subjects=("Ann Lee",)
    )
    loaded: Any = SimpleNamespace(entry=entry, home=tmp_path)
    data = eval_data_for(loaded, set())
    assert data.control_subjects == ["Ann Lee"]
    assert [p for p, _, _ in data.locality] == ["Bob Roe's phone number is"]


def small_model_subject(loaded: Any) -> str:
    """A subject of the small world (the request's, excluded from the Locality set)."""
    from editing.world.build import load_world

    return load_world("small", loaded.home, progress=False).people[0]


def _real_model(tmp_path: Path) -> Any:
    """A registered real model without evaluation files (weights: one small safetensors file)."""
    import torch
    from safetensors.torch import save_file

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_file({"w": torch.arange(4.0)}, str(model_dir / "model.safetensors"))
    entry = ModelEntry(model_id="real", path=str(model_dir))
    return SimpleNamespace(entry=entry, home=tmp_path, source_dir=model_dir, model=None)


def test_a_real_model_gets_the_shipped_facts_and_text(tmp_path: Path) -> None:
    from editing.evaldata import SHIPPED_PPL_PASSAGES
    from editing.realdata.facts import load_facts
    from editing.realdata.text import load_text

    loaded = _real_model(tmp_path)
    data = eval_data_for(loaded, {"France"}, EvalSize(5, 3, 2))
    assert _kinds(data) == {"public": 6}  # 3 genuine facts × 2 prompts; no private facts exist
    targets = {f.target.strip() for f in load_facts().facts}
    assert all(t in targets and "France" not in p for p, t, _ in data.locality)
    assert data.ppl_texts == load_text("heldout")[:SHIPPED_PPL_PASSAGES]
    assert len(eval_data_for(loaded, set()).locality) == DEFAULT_EVAL_SIZE.public_facts * 2


def test_a_probed_real_model_gets_only_the_facts_it_knows(tmp_path: Path) -> None:
    from editing.realdata.facts import load_facts
    from editing.realdata.probe import PROBE_VERSION, cache_path, weights_sha256

    loaded = _real_model(tmp_path)
    fact_set = load_facts()
    known = fact_set.facts[:3]
    records = [
        {"key": f.key, "edit_answered": [f in known] * 3, "heldout_answered": []}
        for f in fact_set.facts
    ]
    path = cache_path(weights_sha256(None, loaded.source_dir), fact_set, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": PROBE_VERSION, "facts": records}))
    data = eval_data_for(loaded, {known[0].subject}, EvalSize(1, 10, 1))
    assert sorted(t for _, t, _ in data.locality) == sorted(f.target.strip() for f in known[1:])


def test_a_real_model_controls_a_fact_with_its_own_relations_subjects(tmp_path: Path) -> None:
    """Controls of a genuine fact are other subjects of its relation (other countries for a
    capital), never the request's own subjects nor one the Locality set asks about; a relation
    the fact set does not have, or a registry ``control_subjects`` list, gets the shared list."""
    from editing.evaldata import DEFAULT_CONTROL_SUBJECTS
    from editing.realdata.facts import load_facts

    loaded = _real_model(tmp_path)
    data = eval_data_for(loaded, {"France"}, EvalSize(5, 3, 2))
    countries = [f.subject for f in load_facts().by_relation()["capital_of"]]
    controls = data.controls_for("capital_of")
    assert len(controls) == 4 and set(controls) <= set(countries) and "France" not in controls
    asked = " ".join(p for p, _, _ in data.locality)
    assert all(c not in asked for rel in data.relation_controls.values() for c in rel)
    assert controls == [c for c in countries if c != "France" and c not in asked][:4]
    assert data.controls_for("no_such_relation") == list(DEFAULT_CONTROL_SUBJECTS)
    loaded.entry = replace(loaded.entry, control_subjects=("Ann", "Bo"))
    data = eval_data_for(loaded, {"France"}, EvalSize(5, 3, 2))
    assert data.controls_for("capital_of") == ["Ann", "Bo"]
