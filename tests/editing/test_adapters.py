"""Tests of editing.adapters on tiny random models of every registered family."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from editing import adapters
from editing.adapters import (
    ARCHITECTURES,
    SITES,
    ArchSpec,
    ModelAdapter,
    NormSpec,
    hook_name,
    parse_hook_name,
    register_architecture,
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


def _gpt2() -> GPT2Config:
    return GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=100, bos_token_id=1, eos_token_id=2
    )


def _common(config_class: type[PretrainedConfig]) -> Callable[[], PretrainedConfig]:
    return lambda: config_class(**_COMMON)


def _gemma3(sliding_window: int = 3) -> Gemma3TextConfig:
    """Gemma 3 as the 270M model is built, in miniature: a sliding-window layer (window 3, shorter
    than the 7-token test inputs) then a global one, q/k norms, tied and scaled embeddings."""
    return Gemma3TextConfig(
        **_COMMON,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=True,
    )


# Every registered family, as a tiny config; test_every_family_is_tested keeps this complete.
CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "gemma": _common(GemmaConfig),
    "gemma2": _common(Gemma2Config),
    "gemma3_text": _gemma3,
    "gpt2": _gpt2,
    "llama": _common(LlamaConfig),
    "mistral": _common(MistralConfig),
    "qwen2": _common(Qwen2Config),
    "qwen3": _common(Qwen3Config),
}
# What the families are, stated independently of editing.adapters (GPT-2's n_inner is 4 * n_embd).
D_MLP = {"gpt2": 128}
DOWN_PROJ_PARAM = {"gpt2": "transformer.h.1.mlp.c_proj.weight"}
POST_FFN_NORM = "post_feedforward_layernorm"
MLP_OUT_MODULE = {"gemma2": POST_FFN_NORM, "gemma3_text": POST_FFN_NORM}
GAIN_OFFSET = {"gemma": 1.0, "gemma2": 1.0, "gemma3_text": 1.0}  # Gemma's RMSNorm: x * (1 + w)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_family_is_tested() -> None:
    assert sorted(CONFIGS) == sorted(ARCHITECTURES), "add a tiny config for each registered family"


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
    d_model, d_mlp = 32, D_MLP.get(arch, 64)
    assert adapter.model_type == arch
    assert (adapter.n_layers, adapter.d_model, adapter.d_mlp) == (2, d_model, d_mlp)
    assert adapter.device == torch.device("cpu")
    assert adapter.dtype == torch.float32
    assert adapter.site_dim("neurons") == d_mlp
    assert adapter.site_dim("resid_post") == adapter.site_dim("mlp_out") == d_model
    assert adapter.final_norm is adapter.model.get_submodule(ARCHITECTURES[arch].final_norm.path)
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
    assert name == DOWN_PROJ_PARAM.get(arch, "model.layers.1.mlp.down_proj.weight")
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


def test_lens_of_the_last_layer_is_the_models_output(
    adapter: ModelAdapter, ids: torch.Tensor
) -> None:
    """lens_logits of the last layer's resid_post reproduces the logits: the final norm's
    scaling, the (tied) unembedding and Gemma-2's final soft-capping are all accounted for."""
    last = adapter.n_layers - 1
    with adapter.capture([("resid_post", last)]) as acts, torch.no_grad():
        logits = adapter.model(input_ids=ids).logits
        lens = adapter.lens_logits(acts[("resid_post", last)])
    torch.testing.assert_close(lens, logits.float(), rtol=1e-5, atol=1e-5)


def test_gemma3_tiny_config_has_what_gemma3_270m_has() -> None:
    """The family tests run Gemma 3 through its own parts: a sliding window shorter than the
    inputs (which changes the output), q/k norms, an embedding scaled by sqrt(d_model) and tied
    to the unembedding."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_gemma3()).eval()
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.q_norm, torch.nn.Module) and isinstance(attn.k_norm, torch.nn.Module)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(3, 100, (1, 7), generator=torch.Generator().manual_seed(1))
    plain = model.model.embed_tokens.weight[ids]
    torch.testing.assert_close(model.model.embed_tokens(ids), plain * 32**0.5)
    wide = AutoModelForCausalLM.from_config(_gemma3(sliding_window=64)).eval()
    wide.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, wide(input_ids=ids).logits)


def test_resid_post_matches_hidden_states(adapter: ModelAdapter, ids: torch.Tensor) -> None:
    with adapter.capture([("resid_post", 0)]) as acts, torch.no_grad():
        out = adapter.model(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(acts[("resid_post", 0)], out.hidden_states[1])


def test_mlp_out_matches_module_output(adapter: ModelAdapter, arch: str, ids: torch.Tensor) -> None:
    module = adapter.layer(1).get_submodule(MLP_OUT_MODULE.get(arch, "mlp"))
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
    for model_type in ARCHITECTURES:
        assert model_type in str(info.value)
    assert "register_architecture" in str(info.value)

    class Fake(torch.nn.Module):
        config = type("Cfg", (), {"model_type": "bert"})()

    with pytest.raises(UnsupportedArchitectureError, match=r"bert.*supported model types"):
        ModelAdapter(Fake())


def _randomize_weight(module: torch.nn.Module, seed: int) -> None:
    """Random norm gains, so that a wrong offset (w vs 1 + w) shows."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.5)


def _norm_formula(norm: NormSpec, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    eps = getattr(module, "eps", None) or module.variance_epsilon
    if norm.kind == "layernorm":
        centred = x - x.mean(-1, keepdim=True)
        y = centred / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
        return y * norm.gain(module) + module.bias
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.gain(module)


def test_norm_specs_state_what_the_modules_compute(adapter: ModelAdapter, arch: str) -> None:
    spec = adapter.spec
    assert (spec.post_ffn_norm is not None) == (arch in MLP_OUT_MODULE)
    norms = [(spec.final_norm, adapter.final_norm)]
    if spec.post_ffn_norm is not None:
        norms.append((spec.post_ffn_norm, adapter.mlp_out_module(1)))
    x = torch.randn(2, 7, adapter.d_model, generator=torch.Generator().manual_seed(2))
    for seed, (norm, module) in enumerate(norms):
        assert norm.offset == GAIN_OFFSET.get(arch, 0.0)
        _randomize_weight(module, seed)
        with torch.no_grad():
            torch.testing.assert_close(module(x), _norm_formula(norm, module, x))


def _mlp_out_without(
    adapter: ModelAdapter, ids: torch.Tensor, layer: int, vector: torch.Tensor
) -> torch.Tensor:
    """The mlp_out site of ``layer`` when ``vector`` is projected out of the down-projection's
    output."""
    unit = vector / vector.norm()

    def project(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out - (out @ unit)[..., None] * unit

    handle = adapter.down_proj_module(layer).register_forward_hook(project)
    try:
        with adapter.capture([("mlp_out", layer)]) as acts:
            _logits(adapter, ids)
    finally:
        handle.remove()
    return acts[("mlp_out", layer)]


def test_write_direction_removes_the_direction_from_mlp_out(
    adapter: ModelAdapter, ids: torch.Tensor
) -> None:
    layer = 1
    if adapter.spec.post_ffn_norm is not None:
        _randomize_weight(adapter.mlp_out_module(layer), 3)
    d = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(4))

    def max_cosine(out: torch.Tensor) -> float:
        return float(((out @ d) / (out.norm(dim=-1) * d.norm())).abs().max())

    v = adapter.write_direction(layer, d)
    assert max_cosine(_mlp_out_without(adapter, ids, layer, v)) < 1e-4
    if adapter.spec.post_ffn_norm is not None:  # projecting out d itself would not do
        assert max_cosine(_mlp_out_without(adapter, ids, layer, d)) > 1e-2
    else:
        torch.testing.assert_close(v, d)


def test_register_architecture_rejects_duplicates_and_bad_specs() -> None:
    with pytest.raises(ConfigError, match="'llama' is already registered"):
        register_architecture("llama", ARCHITECTURES["llama"])
    with pytest.raises(ConfigError, match="must be an ArchSpec; received dict"):
        register_architecture("tiny", {"layers": "model.layers"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'batchnorm'.*expected one of rmsnorm, layernorm"):
        NormSpec("model.norm", kind="batchnorm")
    with pytest.raises(ConfigError, match="post_ffn_norm 'ln' must be an rmsnorm"):
        ArchSpec(
            "model.layers",
            "mlp",
            "mlp.down_proj",
            NormSpec("model.norm"),
            post_ffn_norm=NormSpec("ln", kind="layernorm"),
        )
    with pytest.raises(ConfigError, match="'down_proj' must be a submodule of mlp 'mlp'"):
        ArchSpec("model.layers", "mlp", "down_proj", NormSpec("model.norm"))
    assert "tiny" not in ARCHITECTURES
    with pytest.raises(TypeError):
        ARCHITECTURES["tiny"] = ARCHITECTURES["llama"]  # type: ignore[index]


def test_a_registered_family_is_editable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "_ARCHITECTURES", dict(adapters._ARCHITECTURES))
    with pytest.raises(UnsupportedArchitectureError, match="'my_llama' is not supported"):
        adapters.get_spec("my_llama")
    spec = ArchSpec("model.layers", "mlp", "mlp.down_proj", NormSpec("model.norm"))
    register_architecture("my_llama", spec)
    model = AutoModelForCausalLM.from_config(CONFIGS["llama"]())
    model.config.model_type = "my_llama"
    adapter = ModelAdapter(model)
    assert adapter.spec is spec and adapter.model_type == "my_llama"
    assert adapter.down_proj_param_name(1) == "model.layers.1.mlp.down_proj.weight"
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture("my_llama", spec)
