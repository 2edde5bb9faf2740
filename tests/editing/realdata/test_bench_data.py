"""Benchmark data for a real (non-demo) model: known facts spread over relations as request facts
with their own prompts, a Locality file of the *other* known facts."""

from __future__ import annotations

import json
from pathlib import Path

from editing.realdata import bench_data
from editing.realdata.facts import load_facts
from editing.registry import ModelEntry
from editing.request import ErasureRequest


def test_real_bench_facts(monkeypatch, tmp_path: Path, small_model) -> None:
    by_rel: dict[str, list] = {}
    for f in load_facts().facts:
        by_rel.setdefault(f.relation.name, []).append(f)
    known = [f for group in by_rel.values() for f in group[:4]]  # 4 per relation
    monkeypatch.setattr(bench_data, "known_facts", lambda _loaded: known)
    monkeypatch.setattr(small_model, "home", tmp_path)
    monkeypatch.setattr(small_model, "entry", ModelEntry(model_id="real", path="/nowhere"))

    picked = bench_data.real_bench_facts(small_model, 6, seed=1)
    assert len(picked) == 6
    assert len({p["relation"] for p in picked}) == 6  # one per relation first
    for p in picked:
        ErasureRequest(model="real", method="featureedit", facts=[p])  # a valid request fact
        assert p["edit_prompts"] and p["heldout_prompts"]

    entry = small_model.entry
    assert entry.ppl_file is None  # ΔPPL: the shipped passages every erasure scores (evaldata)
    rows = [json.loads(line) for line in Path(entry.locality_file).read_text().splitlines()]
    assert len(rows) == 2 * (len(known) - 6)
    assert all(not r["target"].startswith(" ") for r in rows)  # scoring adds the space
    assert all(not p["target"].startswith(" ") for p in picked)
    picked_prompts = {q for p in picked for q in p["edit_prompts"]}
    assert not picked_prompts & {r["prompt"] for r in rows}  # no fact judged on itself
    again = bench_data.write_locality_file(
        [f for f in known if f.key not in {f"{p['relation']}:{p['subject']}" for p in picked}],
        tmp_path,
        seed=1,
    )
    assert str(again) == entry.locality_file  # content-named: reused


def test_facts_whose_prompts_hold_the_target_are_not_requested() -> None:
    facts = {f.key: f for f in load_facts().facts}
    assert not bench_data.requestable(facts["language_of_country:Germany"])  # "German" in prompt
    assert bench_data.requestable(facts["capital_of:France"])
