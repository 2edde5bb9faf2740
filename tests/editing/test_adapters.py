"""Tests of editing.adapters on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
)

from editing.adapters import (
    ARCHITECTURES,
    SITES,
    ModelAdapter,
    hook_name,
    parse_hook_name,
)
from editing.errors import ConfigError, UnsupportedArchitectureError

_COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=8,
    num_key_value_heads=2,
    vocab_size=100,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

CONFIGS = {
    "gemma2": lambda: Gemma2Config(**_COMMON),
    "gpt2": lambda: GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=100, bos_token_id=1, eos_token_id=2
    ),
    "llama": lambda: LlamaConfig(**_COMMON),
    "qwen2": lambda: Qwen2Config(**_COMMON),
}
# (d_model, d_mlp): GPT-2's n_inner defaults to 4 * n_embd
DIMS = {"gemma2": (32, 64), "gpt2": (32, 128), "llama": (32, 64), "qwen2": (32, 64)}
MLP_OUT_MODULE = {
    "gemma2": "post_feedforward_layernorm",
    "gpt2": "mlp",
    "llama": "mlp",
    "qwen2": "mlp",
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def adapter(arch: str) -> ModelAdapter:
    torch.manual_seed(0)
    cfg = CONFIGS[arch]()
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return ModelAdapter(model)


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))


def _logits(adapter: ModelAdapter, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return adapter.model(input_ids=ids).logits


def _all_hooks(adapter: ModelAdapter) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.model.modules())


def test_dims(adapter: ModelAdapter, arch: str) -> None:
    d_model, d_mlp = DIMS[arch]
    assert adapter.model_type == arch
    assert (adapter.n_layers, adapter.d_model, adapter.d_mlp) == (2, d_model, d_mlp)
    assert adapter.device == torch.device("cpu")
    assert adapter.dtype == torch.float32
    assert adapter.site_dim("neurons") == d_mlp
    assert adapter.site_dim("resid_post") == adapter.site_dim("mlp_out") == d_model
    assert adapter.final_norm is adapter.model.get_submodule(ARCHITECTURES[arch].final_norm)
    assert adapter.unembed is adapter.model.lm_head


def test_canonical_weight_is_the_applied_matrix(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    layer = 1
    w = adapter.down_proj_weight(layer)
    assert tuple(w.shape) == (adapter.d_model, adapter.d_mlp)
    module = adapter.down_proj_module(layer)
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, a, out: seen.update(out=out.detach()))
    try:
        with adapter.capture([("neurons", layer)]) as acts:
            _logits(adapter, ids)
    finally:
        handle.remove()
    neurons = acts[("neurons", layer)]
    assert tuple(neurons.shape) == (2, 7, adapter.d_mlp)
    expected = neurons @ w.detach().T
    if getattr(module, "bias", None) is not None:
        expected = expected + module.bias.detach()
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


def test_param_name_is_a_state_dict_key(adapter: ModelAdapter, arch: str) -> None:
    name = adapter.down_proj_param_name(1)
    state = adapter.model.state_dict()
    assert name in state
    assert name == {
        "gpt2": "transformer.h.1.mlp.c_proj.weight",
    }.get(arch, "model.layers.1.mlp.down_proj.weight")
    canon = ModelAdapter.to_canonical(arch, state[name])
    torch.testing.assert_close(canon, adapter.down_proj_weight(1).detach())
    torch.testing.assert_close(ModelAdapter.from_canonical(arch, canon), state[name])


def test_set_down_proj_weight(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    before = _logits(adapter, ids)
    old = adapter.down_proj_weight(0).detach().clone()
    new = torch.randn_like(old)
    adapter.set_down_proj_weight(0, new)
    torch.testing.assert_close(adapter.down_proj_weight(0).detach(), new)
    assert not torch.allclose(_logits(adapter, ids), before)
    adapter.set_down_proj_weight(0, old)
    torch.testing.assert_close(_logits(adapter, ids), before)
    with pytest.raises(ConfigError, match=r"\[32, .*received"):
        adapter.set_down_proj_weight(0, new.T.contiguous())


def test_view_writes_through(adapter: ModelAdapter) -> None:
    with torch.no_grad():
        adapter.down_proj_weight(1)[:, 3] = 0.0
    assert torch.all(adapter.down_proj_weight(1)[:, 3] == 0)
    raw = adapter.model.state_dict()[adapter.down_proj_param_name(1)]
    canon = ModelAdapter.to_canonical(adapter.model_type, raw)
    assert torch.all(canon[:, 3] == 0) and canon.abs().sum() > 0


def test_resid_post_matches_hidden_states(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    with adapter.capture([("resid_post", 0)]) as acts, torch.no_grad():
        out = adapter.model(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(acts[("resid_post", 0)], out.hidden_states[1])


def test_mlp_out_matches_module_output(adapter: ModelAdapter, arch: str, ids: torch.Tensor) -> None:
    module = adapter.layer(1).get_submodule(MLP_OUT_MODULE[arch])
    assert module is adapter.mlp_out_module(1)
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, a, out: seen.update(out=out.detach()))
    try:
        with adapter.capture([("mlp_out", 1), ("resid_post", 1)]) as acts:
            _logits(adapter, ids)
    finally:
        handle.remove()
    assert tuple(acts[("mlp_out", 1)].shape) == (2, 7, adapter.d_model)
    torch.testing.assert_close(acts[("mlp_out", 1)], seen["out"])


def test_identity_patch_is_a_no_op(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    before = _logits(adapter, ids)
    for site in SITES:
        with adapter.patch(site, 0, lambda x: x), adapter.patch(site, 1, lambda x: x.clone()):
            torch.testing.assert_close(_logits(adapter, ids), before)
    assert _all_hooks(adapter) == 0


def test_zero_neurons_equals_zero_weight(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    before = _logits(adapter, ids)
    with adapter.patch("neurons", 0, torch.zeros_like):
        patched = _logits(adapter, ids)
    assert not torch.allclose(patched, before)
    adapter.set_down_proj_weight(0, torch.zeros(adapter.d_model, adapter.d_mlp))
    torch.testing.assert_close(_logits(adapter, ids), patched, rtol=1e-5, atol=1e-5)


def test_stacked_patches_and_capture_sees_patch(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    with adapter.capture([("resid_post", 0)]) as plain:
        _logits(adapter, ids)
    x = plain[("resid_post", 0)]
    with (
        adapter.capture([("resid_post", 0)]) as acts,
        adapter.patch("resid_post", 0, lambda a: a * 2),
        adapter.patch("resid_post", 0, lambda a: a + 1),
    ):
        _logits(adapter, ids)
    # innermost patch first, capture sees the final value
    torch.testing.assert_close(acts[("resid_post", 0)], (x + 1) * 2)


def test_hooks_removed_even_on_exception(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    assert _all_hooks(adapter) == 0
    sites = [(s, lay) for s in SITES for lay in range(adapter.n_layers)]
    with pytest.raises(RuntimeError, match="boom"):  # noqa: SIM117
        with adapter.capture(sites), adapter.patch("neurons", 1, lambda x: x):
            assert _all_hooks(adapter) == len(sites) + 1
            raise RuntimeError("boom")
    assert _all_hooks(adapter) == 0
    assert len(adapter.layer(0)._forward_hooks) == 0

    def bad(x: torch.Tensor) -> torch.Tensor:
        return x[..., :3]

    with pytest.raises(ConfigError, match="must return a tensor of shape"):  # noqa: SIM117
        with adapter.patch("resid_post", 0, bad):
            _logits(adapter, ids)
    assert _all_hooks(adapter) == 0


def test_capture_without_detach_gives_gradients(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    with adapter.capture([("resid_post", 0), ("neurons", 1)], detach=False) as acts:
        logits = adapter.model(input_ids=ids).logits
    resid = acts[("resid_post", 0)]
    assert resid.requires_grad
    resid.retain_grad()  # after forward is fine: grads flow on backward
    acts[("neurons", 1)].retain_grad()
    logits[:, -1].logsumexp(-1).sum().backward()
    assert resid.grad is not None and resid.grad.shape == resid.shape
    assert resid.grad.abs().sum() > 0
    assert acts[("neurons", 1)].grad.abs().sum() > 0


def test_validation_errors(adapter: ModelAdapter) -> None:
    with pytest.raises(ConfigError, match=r"valid layers are 0\.\.1"):
        adapter.validate_layer(2)
    with pytest.raises(ConfigError, match=r"valid layers are 0\.\.1"):
        adapter.layer(-1)
    with pytest.raises(ConfigError, match="unknown site"):
        adapter.site_dim("attn_out")
    with pytest.raises(ConfigError, match="unknown site"), adapter.capture([("nope", 0)]):
        pass
    assert _all_hooks(adapter) == 0


def test_hook_names_round_trip(adapter: ModelAdapter) -> None:
    assert hook_name("resid_post", 3) == "blocks.3.hook_resid_post"
    assert hook_name("mlp_out", 0) == "blocks.0.hook_mlp_out"
    assert hook_name("neurons", 12) == "blocks.12.mlp.hook_post"
    for site in SITES:
        assert parse_hook_name(hook_name(site, 7)) == (site, 7)
        assert adapter.parse_hook_name(adapter.hook_name(site, 1)) == (site, 1)
    for bad in ("blocks.1.hook_attn_out", "blocks.x.hook_resid_post", "hook_resid_post"):
        with pytest.raises(ConfigError):
            parse_hook_name(bad)
    with pytest.raises(ConfigError, match="valid layers"):
        adapter.parse_hook_name("blocks.5.hook_resid_post")


def test_unknown_model_type() -> None:
    with pytest.raises(UnsupportedArchitectureError) as info:
        ModelAdapter.to_canonical("mamba", torch.zeros(2, 3))
    for model_type in ("gemma2", "gpt2", "llama", "qwen2", "qwen3", "mistral"):
        assert model_type in str(info.value)

    class Fake(torch.nn.Module):
        config = type("Cfg", (), {"model_type": "bert"})()

    with pytest.raises(UnsupportedArchitectureError, match=r"bert.*supported model types"):
        ModelAdapter(Fake())
