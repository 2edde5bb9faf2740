"""Tests of editing.edits: diffs as row/column/dense deltas, exact apply and revert, mismatches.

The tiny-model builders here are also used by ``test_checkpoints.py``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from editing.adapters import ModelAdapter
from editing.edits import Edit, LayerDelta, WeightSession, tensor_sha256
from editing.errors import ConfigError

FAMILIES = ("gemma2", "gpt2")


def make_config(family: str):
    """Config of a tiny random model of ``family`` (vocab 64, 2 layers, d_model 32)."""
    if family == "gemma2":
        return Gemma2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            head_dim=8,
            num_key_value_heads=2,
            vocab_size=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    if family == "gpt2":
        return GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=64, bos_token_id=1, eos_token_id=2
        )
    raise ValueError(f"unknown family {family!r}")


def make_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A tiny random model of ``family`` in eval mode, without gradients."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(family), attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a handful of words (ids < 64)."""
    words = [
        "the",
        "phone",
        "number",
        "of",
        "alice",
        "is",
        "call",
        "her",
        "at",
        "mail",
        "bob",
        "works",
        "in",
        "paris",
    ]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry (name and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_sha256(t).encode())
    return h.hexdigest()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """Every tensor of ``model`` is bit-identical to ``expected``."""
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f"changed: {different}"


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(family: str) -> PreTrainedModel:
    return make_model(family)


@pytest.fixture
def adapter(model: PreTrainedModel) -> ModelAdapter:
    return ModelAdapter(model)


def _edit_columns(adapter: ModelAdapter, layer: int, cols: list[int]) -> Edit:
    with WeightSession(adapter, [layer]) as session, torch.no_grad():
        adapter.down_proj_weight(layer)[:, cols] = 0.0
        return session.edit({"note": "cols"})


def test_column_change_gives_cols_delta(adapter: ModelAdapter) -> None:
    before = adapter.down_proj_weight(1).clone()
    edit = _edit_columns(adapter, 1, [3, 7])
    assert torch.equal(adapter.down_proj_weight(1), before)  # the session restored the weights
    (d,) = edit.deltas
    assert (d.layer, d.axis, d.indices.tolist()) == (1, "cols", [3, 7])
    assert d.param == adapter.down_proj_param_name(1)
    assert d.old.shape == d.new.shape == (adapter.d_model, 2)
    assert torch.equal(d.old, before[:, [3, 7]])
    assert torch.equal(d.new, torch.zeros(adapter.d_model, 2))
    assert edit.metadata == {"note": "cols"}
    assert edit.entries_changed == 2 * adapter.d_model


def test_row_change_gives_rows_delta(adapter: ModelAdapter) -> None:
    with WeightSession(adapter, [0]) as session, torch.no_grad():
        adapter.down_proj_weight(0)[5] += 1.0
        edit = session.edit()
    (d,) = edit.deltas
    assert (d.layer, d.axis, d.indices.tolist()) == (0, "rows", [5])
    assert d.old.shape == (1, adapter.d_mlp)


def test_full_change_gives_dense_delta(adapter: ModelAdapter) -> None:
    with WeightSession(adapter, [0]) as session, torch.no_grad():
        adapter.down_proj_weight(0).mul_(2.0)
        edit = session.edit()
    assert edit.deltas[0].axis == "dense"


def test_full_change_is_captured_exactly(adapter: ModelAdapter) -> None:
    with WeightSession(adapter, [0]) as session, torch.no_grad():
        adapter.down_proj_weight(0).mul_(2.0)
        target = adapter.down_proj_weight(0).clone()
        edit = session.edit()
    (d,) = edit.deltas
    assert d.axis in ("rows", "dense")
    with edit.applied(adapter):
        assert torch.equal(adapter.down_proj_weight(0), target)


def test_no_change_gives_empty_edit(adapter: ModelAdapter) -> None:
    with WeightSession(adapter) as session:
        edit = session.edit()
    assert edit.deltas == [] and edit.is_empty()


def test_dense_delta_applies_and_reverts(model: PreTrainedModel, adapter: ModelAdapter) -> None:
    old = adapter.down_proj_weight(1).detach().clone()
    new = torch.randn_like(old)
    delta = LayerDelta(
        1, adapter.down_proj_param_name(1), "dense", torch.empty(0, dtype=torch.long), old, new
    )
    edit = Edit([delta])
    before = snapshot(model)
    edit.apply(adapter)
    assert torch.equal(adapter.down_proj_weight(1), new)
    edit.revert(adapter)
    assert_same_weights(model, before)


def test_apply_then_revert_is_bit_exact(model: PreTrainedModel, adapter: ModelAdapter) -> None:
    before = snapshot(model)
    before_sha = state_dict_sha256(model)
    with WeightSession(adapter, [0, 1]) as session, torch.no_grad():
        # arithmetic that does not invert exactly in floating point
        adapter.down_proj_weight(0)[:, 2].mul_(1.0 / 3.0).add_(0.1)
        adapter.down_proj_weight(1)[4].sub_(1e-3)
        edited = {lay: adapter.down_proj_weight(lay).clone() for lay in (0, 1)}
        edit = session.edit()
    assert_same_weights(model, before)
    for _ in range(3):
        edit.apply(adapter)
        for lay in (0, 1):
            assert torch.equal(adapter.down_proj_weight(lay), edited[lay])
        assert state_dict_sha256(model) != before_sha
        edit.revert(adapter)
        assert_same_weights(model, before)
        assert state_dict_sha256(model) == before_sha


def test_combined_edit_over_two_layers(model: PreTrainedModel, adapter: ModelAdapter) -> None:
    with WeightSession(adapter, [0, 1]) as session, torch.no_grad():
        adapter.down_proj_weight(0)[:, 1] = 0.0
        adapter.down_proj_weight(1)[:, [4, 9]] = 0.0
        edit = session.edit({"facts": 2})
    assert edit.layers == [0, 1]
    assert [d.axis for d in edit.deltas] == ["cols", "cols"]
    assert [d.indices.tolist() for d in edit.deltas] == [[1], [4, 9]]
    assert edit.entries_changed == 3 * adapter.d_model
    footprint = edit.footprint()
    assert [f["layer"] for f in footprint] == [0, 1]
    assert footprint[1]["indices"] == [4, 9]
    before = snapshot(model)
    with edit.applied(adapter):
        assert not adapter.down_proj_weight(0)[:, 1].any()
        assert not adapter.down_proj_weight(1)[:, [4, 9]].any()
    assert_same_weights(model, before)


def test_apply_on_mismatching_model_raises(family: str, adapter: ModelAdapter) -> None:
    edit = _edit_columns(adapter, 0, [1])
    other_model = make_model(family, seed=1)
    other = ModelAdapter(other_model)
    before = snapshot(other_model)
    with pytest.raises(ConfigError, match="does not fit this model"):
        edit.apply(other)
    assert_same_weights(other_model, before)


def test_failed_apply_leaves_model_unchanged(family: str, adapter: ModelAdapter) -> None:
    with WeightSession(adapter, [0, 1]) as session, torch.no_grad():
        adapter.down_proj_weight(0)[:, 1] = 0.0
        adapter.down_proj_weight(1)[:, 1] = 0.0
        edit = session.edit()
    hybrid = make_model(family, seed=1)
    hybrid_adapter = ModelAdapter(hybrid)
    hybrid_adapter.set_down_proj_weight(0, adapter.down_proj_weight(0))  # layer 0 fits, 1 doesn't
    before = snapshot(hybrid)
    with pytest.raises(ConfigError):
        edit.apply(hybrid_adapter)
    assert_same_weights(hybrid, before)


def test_applied_reverts_on_exception(model: PreTrainedModel, adapter: ModelAdapter) -> None:
    edit = _edit_columns(adapter, 1, [0])
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), edit.applied(adapter):
        assert not adapter.down_proj_weight(1)[:, 0].any()
        raise RuntimeError("boom")
    assert_same_weights(model, before)


def test_session_restores_on_exception(model: PreTrainedModel, adapter: ModelAdapter) -> None:
    before = snapshot(model)
    with pytest.raises(RuntimeError), WeightSession(adapter, [0]), torch.no_grad():
        adapter.down_proj_weight(0).zero_()
        raise RuntimeError("method failed")
    assert_same_weights(model, before)
