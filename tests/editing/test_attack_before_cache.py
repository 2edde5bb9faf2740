"""The attack suite's before side kept in the baseline cache (issue #16): a cached score is the
score measured again, read without measuring, and never served to another model or budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from editing.attacks import AttackCase
from editing.attacks.sampled import SampledLeak
from editing.attacks.suite import before_key, run_attacks
from editing.baseline import BaselineCache, attack_before_cache
from editing.edits import WeightSession
from editing.request import FactSpec

ATTACKS = ["sampled", "logit_lens"]
BUDGETS = {"sampled": {"samples": 3}}


@pytest.fixture(scope="module")
def cases(small_world, erasable_fact) -> list[AttackCase]:
    """The erasable fact and two more private facts."""
    facts = [erasable_fact, *(f for f in small_world.private_facts()[:3] if f != erasable_fact)]
    return [AttackCase.from_fact(FactSpec(**f.spec())) for f in facts[:3]]


@pytest.fixture(scope="module")
def edit(small_model, erasable_fact):
    """Default FeatureEdit's edit of the erasable fact."""
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    result = run_erasure(
        ErasureRequest(model="demo-small", facts=[erasable_fact.spec()]),
        small_model,
        leak_samples=1,
    )
    assert result.edit is not None
    return result.edit


@pytest.fixture
def cache(tmp_path: Path) -> BaselineCache:
    return BaselineCache(tmp_path / "baselines", b"k" * 32)


def _befores(per_fact):
    return [{n: r[n].before for n in ATTACKS} for r in per_fact]


def _attacked(model, cases, edit, cache: BaselineCache):
    """The suite on ``cases`` with ``cache``'s attack scores of ``model``."""
    store = attack_before_cache(model, cache)
    return run_attacks(model, edit, cases, ATTACKS, BUDGETS, before_cache=store)


def test_cached_before_scores_are_the_recomputed_ones(small_model, cases, edit, cache, monkeypatch):
    plain = run_attacks(small_model, edit, cases, ATTACKS, BUDGETS)
    cold = _attacked(small_model, cases, edit, cache)
    assert _befores(cold) == _befores(plain)
    measured: list[str] = []
    for method in ("measure_many", "measure_before_many"):
        original = getattr(SampledLeak, method)

        def counting(self, loaded, batch, original=original, method=method):
            measured.append(method)
            return original(self, loaded, batch)

        monkeypatch.setattr(SampledLeak, method, counting)
    fresh = BaselineCache(cache.root, b"k" * 32)  # another worker on the same home
    warm = _attacked(small_model, cases, edit, fresh)
    assert measured == ["measure_many"]  # the after side only
    assert _befores(warm) == _befores(plain)
    assert [r["sampled"].after for r in warm] == [r["sampled"].after for r in plain]


def test_files_hold_numbers_only(small_model, cases, edit, cache) -> None:
    _attacked(small_model, cases, edit, cache)
    text = "".join(p.read_text() for p in cache.root.rglob("*.json"))
    assert text
    for case in cases:
        assert case.secret not in text and case.subject not in text
        assert not any(p in text for p in case.prompts)


def test_another_model_or_budget_misses(small_model, cases, edit, cache) -> None:
    store = attack_before_cache(small_model, cache)
    run_attacks(small_model, edit, cases, ["sampled"], BUDGETS, before_cache=store)
    key = before_key("sampled", SampledLeak(**BUDGETS["sampled"]).budget, cases[0])
    assert store.get(key) is not None
    assert store.get(before_key("sampled", SampledLeak(samples=4).budget, cases[0])) is None
    with WeightSession(small_model.adapter):
        small_model.adapter.down_proj_weight(0).data[:, :8] *= 0.5
        assert attack_before_cache(small_model, cache).get(key) is None
    assert attack_before_cache(small_model, BaselineCache(cache.root, b"z" * 32)).get(key) is None
    assert attack_before_cache(small_model, cache).get(key) == store.get(key)
