"""Attacks batched across facts (issue #16): one pass before the edit, one with it applied once."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from editing import evaluate as ev
from editing.attacks import AttackCase
from editing.attacks.base import Attack, ModelStates, Score
from editing.attacks.sampled import SampledLeak
from editing.attacks.suite import run_attacks
from editing.checkpoints.publish import down_proj_sha256


@pytest.fixture(scope="module")
def cases(small_world, erasable_fact) -> list[AttackCase]:
    """The erasable fact (memorised: its secret is sampled often) and three more private facts."""
    from editing.request import FactSpec

    facts = [erasable_fact, *(f for f in small_world.private_facts()[:4] if f != erasable_fact)]
    return [
        AttackCase.from_fact(FactSpec(subject=f.subject, relation=f.relation, target=f.target))
        for f in facts[:4]
    ]


@pytest.fixture(scope="module")
def edit(small_model, erasable_fact):
    """Default FeatureEdit's edit of the erasable fact."""
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    fact = {k: getattr(erasable_fact, k) for k in ("subject", "relation", "target")}
    req = ErasureRequest(model="demo-small", facts=[fact])
    result = run_erasure(req, small_model, leak_samples=1)
    assert result.edit is not None
    return result.edit


class _Spy(Attack):
    """Records, per ``measure_many`` call, how many cases it got and the down-proj hash."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, str]] = []

    def measure(self, loaded, case: AttackCase) -> Score:  # type: ignore[override]
        raise AssertionError("run_many must go through measure_many")

    def measure_many(self, loaded, cases: Sequence[AttackCase]) -> list[Score]:  # type: ignore[override]
        self.calls.append((len(cases), down_proj_sha256(loaded.adapter)))
        return [Score(values={"n": len(c.secret)}) for c in cases]


def test_one_case_batched_is_the_per_case_measure(small_model, cases) -> None:
    attack = SampledLeak(samples=6)
    (batched,) = attack.measure_many(small_model, cases[:1])
    case = cases[0]
    for key, top_p in (("t1", 1.0), ("p09", 0.9)):  # the pre-batching measure, spelled out
        rate = ev.leak_rate(
            small_model.model, small_model.tokenizer, case.prompts, case.secret, 6, 0, top_p
        )
        assert batched.values[f"hits_{key}"] == rate.hits
        assert batched.values[f"samples_{key}"] == rate.count
        assert batched.success[key] == (rate.hits > 0)
    assert batched == attack.measure(small_model, case)


def test_batched_sampling_scores_like_per_case(small_model, cases) -> None:
    attack = SampledLeak(samples=16)
    batched = attack.measure_many(small_model, cases)
    single = [attack.measure(small_model, c) for c in cases]
    assert len(batched) == len(cases)
    for b, s, case in zip(batched, single, cases, strict=True):
        assert set(b.values) == set(s.values) and set(b.success) == set(s.success)
        assert b.values["prompts"] == len(case.prompts)
        assert b.values["samples_t1"] == s.values["samples_t1"] == 16 * len(case.prompts)
    # one stream per prompt and sample (editing.sampling): batched draws are each case's own
    assert batched == single
    # the memorised fact leaks under both, at a similar rate
    assert batched[0].values["leak_rate_t1"] > 0.3 and single[0].values["leak_rate_t1"] > 0.3
    assert batched[0].success["any"] and single[0].success["any"]


def test_run_many_applies_the_edit_once_and_reuses_before(small_model, cases, edit) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    spy = _Spy()
    states = ModelStates(small_model, edit)
    done: list[int] = []
    known = Score(values={"n": -1})
    results = spy.run_many(states, cases, before=[None, known, None, None], on_done=done.append)
    assert down_proj_sha256(small_model.adapter) == pristine
    # one pristine pass over the 3 uncached cases, one edited pass over all 4
    assert [n for n, _ in spy.calls] == [3, 4]
    assert spy.calls[0][1] == pristine and spy.calls[1][1] != pristine
    assert done == [0, 1, 2, 3]
    assert results[1].before == known
    for r, c in zip(results, cases, strict=True):
        assert r.after.values["n"] == len(c.secret)
        assert r.before is not None


def test_run_attacks_batches_with_cache_and_progress(small_model, cases, edit, monkeypatch) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    calls: list[int] = []
    for method in ("measure_many", "measure_before_many"):
        original = getattr(SampledLeak, method)

        def counting(self, loaded, batch, original=original):  # type: ignore[no-untyped-def]
            calls.append(len(batch))
            return original(self, loaded, batch)

        monkeypatch.setattr(SampledLeak, method, counting)
    budgets = {"sampled": {"samples": 2}}
    ticks: list[tuple[int, int]] = []
    cache: dict = {}
    per_fact = run_attacks(
        small_model, edit, cases, ["sampled"], budgets, lambda d, t: ticks.append((d, t)), cache
    )
    assert calls == [len(cases), len(cases)]  # before and after, each batched across facts
    assert ticks == [(i + 1, len(cases)) for i in range(len(cases))]
    assert down_proj_sha256(small_model.adapter) == pristine
    assert len(cache) == len(cases) and all(set(r) == {"sampled"} for r in per_fact)
    calls.clear()
    again = run_attacks(small_model, edit, cases, ["sampled"], budgets, before_cache=cache)
    assert calls == [len(cases)]  # the cached "before" scores are not measured again
    assert [r["sampled"].before for r in again] == [r["sampled"].before for r in per_fact]


def test_generation_batches_group_rows_by_tokens_to_generate() -> None:
    from editing.scoring import by_length

    rows = [[1] * n for n in (3, 5, 4, 2, 6, 1)]
    limits = [2, 9, 2, 9, 2, 9]  # facts with short and long secrets, mixed
    assert by_length(rows, 3, limits) == [[1, 3, 5], [4, 2, 0]]  # long limits share a batch
    assert by_length(rows, 3) == [[4, 1, 2], [0, 3, 5]]  # without limits: longest prompt first


def test_the_control_stops_early_with_the_whole_budgets_success(small_model, cases) -> None:
    """Before the edit the sampled attack draws its budget in rounds of the same streams and a
    fact stops at ``before_stop_hits``: the same success flags as the whole budget, its rate over
    the samples drawn (a prefix of the whole budget's); after the edit nothing changes."""
    whole = SampledLeak(samples=16, before_stop_hits=0).measure_many(small_model, cases)
    assert SampledLeak(samples=16, before_stop_hits=0).measure_before_many(small_model, cases) == (
        whole
    )
    unreachable = SampledLeak(samples=16, before_stop_hits=10**6)
    assert unreachable.measure_before_many(small_model, cases) == whole
    control = SampledLeak(samples=16, before_stop_hits=5).measure_before_many(small_model, cases)
    stopped = 0
    for c, w, case in zip(control, whole, cases, strict=True):
        assert c.success == w.success
        for key in ("t1", "p09"):
            drawn, budget = c.values[f"samples_{key}"], w.values[f"samples_{key}"]
            assert drawn % (4 * len(case.prompts)) == 0 and 0 < drawn <= budget
            assert c.values[f"hits_{key}"] <= w.values[f"hits_{key}"]
            if drawn < budget:
                stopped += 1
                assert c.values[f"hits_{key}"] >= 5
            else:
                assert c.values[f"hits_{key}"] == w.values[f"hits_{key}"]
    assert stopped  # the memorised fact leaks at once
    assert SampledLeak(samples=16).measure_many(small_model, cases) == whole  # after: whole budget
