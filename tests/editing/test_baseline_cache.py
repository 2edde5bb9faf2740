"""The baseline cache (issue #16): reused for the same model, evaluation rows and dtype/device;
never for a changed base checkpoint, evaluation set or dtype."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from editing.baseline import BaselineCache, baseline_scores, model_key
from editing.checkpoints import down_proj_sha256
from editing.edits import WeightSession
from editing.erase import run_erasure
from editing.evaldata import EvalData, eval_data_for
from editing.request import ErasureRequest


@pytest.fixture
def cache(tmp_path: Path) -> BaselineCache:
    return BaselineCache(tmp_path / "baselines", b"k" * 32)


@pytest.fixture(scope="module")
def data(small_model) -> EvalData:
    return eval_data_for(small_model, set())


def _same(a, b) -> None:
    assert [s.reproduced for s in a.locality] == [s.reproduced for s in b.locality]
    for x, y in zip(a.locality, b.locality):
        assert math.isclose(x.logprob, y.logprob, abs_tol=1e-4)
    assert math.isclose(a.perplexity, b.perplexity, rel_tol=1e-5)


def test_second_use_reads_everything_from_the_cache(small_model, data, cache) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    first = baseline_scores(small_model, data, pristine, cache)
    n = len(data.locality) + len(data.ppl_texts)
    assert (first.computed, first.cached) == (n, 0)
    # a new cache object on the same directory (another worker on the same home)
    second = baseline_scores(small_model, data, pristine, BaselineCache(cache.root, b"k" * 32))
    assert (second.computed, second.cached) == (0, n)
    _same(first, second)
    _same(first, baseline_scores(small_model, data, pristine, None))


def test_files_name_no_prompt_answer_or_passage(small_model, data, cache) -> None:
    baseline_scores(small_model, data, down_proj_sha256(small_model.adapter), cache)
    text = "".join(p.read_text() for p in cache.root.rglob("*.json"))
    assert text
    for prompt, target, _ in data.locality:
        assert prompt not in text and target not in text
    assert not any(t[:40] in text for t in data.ppl_texts)


def test_a_changed_evaluation_set_rescores_only_the_changed_rows(small_model, data, cache):
    pristine = down_proj_sha256(small_model.adapter)
    baseline_scores(small_model, data, pristine, cache)
    changed = dataclasses.replace(data, locality=list(data.locality))
    prompt, target, kind = changed.locality[0]
    changed.locality[0] = (prompt + " Indeed,", target, kind)
    again = baseline_scores(small_model, changed, pristine, cache)
    assert again.computed == 1
    alone = baseline_scores(small_model, changed, pristine, None)
    assert math.isclose(again.locality[0].logprob, alone.locality[0].logprob, abs_tol=1e-4)


def test_edited_weights_in_memory_are_another_model(small_model, data, cache) -> None:
    """A sequential erasure's parent edit (applied before the baseline) is never the base's."""
    pristine = down_proj_sha256(small_model.adapter)
    baseline_scores(small_model, data, pristine, cache)
    with WeightSession(small_model.adapter):
        small_model.adapter.down_proj_weight(0).data[:, :8] *= 0.5
        edited = down_proj_sha256(small_model.adapter)
        assert model_key(small_model, edited) != model_key(small_model, pristine)
        again = baseline_scores(small_model, data, edited, cache)
        assert again.cached == 0
        _same(again, baseline_scores(small_model, data, edited, None))


def test_a_changed_base_checkpoint_is_another_model(small_model, tmp_path: Path) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    copy = tmp_path / "model"
    shutil.copytree(small_model.source_dir, copy)
    (weights,) = copy.glob("*.safetensors")
    tensors = load_file(weights)
    name = next(n for n, t in tensors.items() if t.is_floating_point() and "norm" in n)
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    other = dataclasses.replace(small_model, source_dir=copy)
    assert model_key(other, pristine) != model_key(small_model, pristine)


def test_a_changed_config_with_the_same_weights_is_another_model(small_model) -> None:
    """config.json changes what the same weights compute (e.g. a norm epsilon, rope theta)."""
    pristine = down_proj_sha256(small_model.adapter)
    config = copy.deepcopy(small_model.model.config)
    key = next(k for k in ("rms_norm_eps", "layer_norm_eps") if hasattr(config, k))
    setattr(config, key, getattr(config, key) * 10)
    other_model = copy.copy(small_model.model)
    other_model.config = config
    other = dataclasses.replace(small_model, model=other_model)
    assert model_key(other, pristine) != model_key(small_model, pristine)
    assert small_model.model.config is not config  # the shared fixture is untouched


def test_another_dtype_is_another_model(small_model, fe_home, data, cache) -> None:
    from editing.models import load_model

    half = load_model("demo-small", dtype="bfloat16", home=fe_home)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    pristine = down_proj_sha256(small_model.adapter)
    baseline_scores(small_model, data, pristine, cache)
    half_pristine = down_proj_sha256(half.adapter)
    assert model_key(half, half_pristine) != model_key(small_model, pristine)
    assert baseline_scores(half, data, half_pristine, cache).cached == 0


def test_a_corrupt_cache_file_is_ignored_and_rescored(small_model, data, cache) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    baseline_scores(small_model, data, pristine, cache)
    (path,) = cache.root.rglob("*.json")
    path.write_text("{not json")
    fresh = BaselineCache(cache.root, b"k" * 32)
    again = baseline_scores(small_model, data, pristine, fresh)
    assert again.cached == 0
    _same(again, baseline_scores(small_model, data, pristine, None))


def test_another_fingerprint_key_shares_nothing(small_model, data, cache) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    baseline_scores(small_model, data, pristine, cache)
    other = BaselineCache(cache.root, b"z" * 32)
    assert baseline_scores(small_model, data, pristine, other).cached == 0


def test_erasure_with_cache_reports_what_it_reports_without(small_model, erasable_fact, cache):
    request = ErasureRequest(
        model="demo-small",
        facts=[erasable_fact.spec()],
    )
    plain = run_erasure(request, small_model, leak_samples=1)
    cold = run_erasure(request, small_model, leak_samples=1, baseline_cache=cache)
    assert list(cache.root.rglob("*.json"))
    warm = run_erasure(request, small_model, leak_samples=1, baseline_cache=cache)
    for result in (cold, warm):
        assert result.status == plain.status
        for name in ("reliability", "generalization", "locality"):
            assert getattr(result.metrics, name).value == getattr(plain.metrics, name).value
        assert math.isclose(result.metrics.ppl_before, plain.metrics.ppl_before, rel_tol=1e-5)
        assert math.isclose(result.metrics.delta_ppl, plain.metrics.delta_ppl, abs_tol=1e-4)


def test_fact_before_figures_come_from_the_cache(small_model, erasable_fact, cache, monkeypatch):
    """A fact's figures before the edit (P(secret), exposure, sampled leak) are measured once
    per model: the second erasure reads them, equal to measuring them again; edited weights
    (another model) measure them anew."""
    from editing import erase

    request = ErasureRequest(model="demo-small", facts=[erasable_fact.spec()])
    plain = run_erasure(request, small_model, leak_samples=3)
    run_erasure(request, small_model, leak_samples=3, baseline_cache=cache)
    measured: list[int] = []
    original = erase._snapshots

    def counting(model, tok, cases, leak_samples):
        measured.append(len(cases))
        return original(model, tok, cases, leak_samples)

    monkeypatch.setattr(erase, "_snapshots", counting)
    fresh = BaselineCache(cache.root, b"k" * 32)
    warm = run_erasure(request, small_model, leak_samples=3, baseline_cache=fresh)
    assert measured == [1]  # the edited model's figures only
    before = plain.facts[0].metrics.before
    assert before is not None and before.leak_rate is not None and before.leak_rate.count > 0
    assert warm.facts[0].metrics.before == before
    shown = [r.report().to_json()["facts"][0]["metrics"] for r in (warm, plain)]
    assert shown[0] == shown[1]  # read back, the figures keep the report's shape
    assert warm.facts[0].metrics.after == plain.facts[0].metrics.after
    assert run_erasure(request, small_model, leak_samples=2, baseline_cache=fresh)
    assert measured[1:] == [1, 1]  # another leak budget: measured again
    with WeightSession(small_model.adapter):
        small_model.adapter.down_proj_weight(0).data[:, :8] *= 0.5
        run_erasure(request, small_model, leak_samples=3, baseline_cache=fresh)
    assert measured[3:] == [1, 1]
