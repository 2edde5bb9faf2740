"""One interface over the ``transformers`` causal LMs featureedit can edit.

Every module path and norm convention lives in one :class:`ArchSpec` per family, registered with
:func:`register_architecture` and keyed by ``config.model_type`` (:data:`ARCHITECTURES`); nothing
else in the code base should name a ``transformers`` module. :class:`ModelAdapter` gives

* the MLP down-projection ``W`` of each layer in the *canonical* orientation ``[d_model, d_mlp]``
  (GPT-2's ``Conv1D`` stores it transposed; the adapter hides that), and
* three activation *sites* (see ``METHOD.md``): ``resid_post`` (output of decoder layer ``l``),
  ``mlp_out`` (the MLP branch's contribution to the residual, after Gemma-2's post-feed-forward
  norm) and ``neurons`` (the input of the down-projection), which can be captured and patched with
  PyTorch hooks, and named the TransformerLens / sae-lens way (``blocks.l.hook_resid_post``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from editing.errors import ConfigError, UnsupportedArchitectureError

SITES: tuple[str, ...] = ("resid_post", "mlp_out", "neurons")

_HOOK_SUFFIX = {
    "resid_post": "hook_resid_post",
    "mlp_out": "hook_mlp_out",
    "neurons": "mlp.hook_post",
}
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_mlp_out|mlp\.hook_post)$")


NORM_KINDS: tuple[str, ...] = ("rmsnorm", "layernorm")


@dataclass(frozen=True)
class NormSpec:
    """A normalization module: where it lives, what it computes and how its weight scales.

    ``kind`` is ``"rmsnorm"`` (``x / rms(x) * g``) or ``"layernorm"``
    (``(x - mean) / std * g + b``); the per-channel gain is ``g = offset + weight``: Gemma's
    RMSNorm multiplies by ``(1 + w)`` (``offset=1.0``), Llama's and GPT-2's norms by ``w``
    (``offset=0.0``).
    """

    path: str  # dotted module path (from the model root, or from a decoder layer)
    kind: str = "rmsnorm"
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NORM_KINDS:
            raise ConfigError(
                f"norm kind {self.kind!r} of {self.path!r} is not supported; expected one of "
                f"{', '.join(NORM_KINDS)}"
            )

    def gain(self, module: nn.Module) -> torch.Tensor:
        """The per-channel factor ``offset + weight`` that the norm ``module`` multiplies by."""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise UnsupportedArchitectureError(
                f"norm {self.path!r} ({type(module).__name__}) has no weight; an ArchSpec norm "
                "must be an affine RMSNorm or LayerNorm"
            )
        return self.offset + weight.detach().float()


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts featureedit needs live in one architecture, and how its norms scale.

    Module paths are dotted; ``layers``, ``final_norm`` and ``unembed`` from the model root, the
    others from a decoder layer. ``post_ffn_norm`` is the norm between the MLP and the residual
    stream (Gemma-2/3), None where the MLP output is added to the residual as is.
    """

    layers: str  # the decoder-layer ModuleList
    mlp: str  # the MLP block
    down_proj: str  # the MLP down-projection (inside ``mlp``)
    final_norm: NormSpec  # the norm before the unembedding
    unembed: str = "lm_head"
    post_ffn_norm: NormSpec | None = None
    down_proj_conv1d: bool = False  # GPT-2 Conv1D: weight stored as [d_mlp, d_model]

    def __post_init__(self) -> None:
        if not self.down_proj.startswith(f"{self.mlp}."):
            raise ConfigError(
                f"down_proj {self.down_proj!r} must be a submodule of mlp {self.mlp!r} "
                f"(e.g. '{self.mlp}.down_proj')"
            )
        if self.post_ffn_norm is not None and self.post_ffn_norm.kind != "rmsnorm":
            # write_direction relies on the norm being a per-channel scale times a scalar.
            raise ConfigError(
                f"post_ffn_norm {self.post_ffn_norm.path!r} must be an rmsnorm; received "
                f"{self.post_ffn_norm.kind!r}"
            )

    @property
    def mlp_out(self) -> str:
        """The module whose output is the MLP branch's contribution to the residual stream."""
        return self.post_ffn_norm.path if self.post_ffn_norm is not None else self.mlp


_ARCHITECTURES: dict[str, ArchSpec] = {}
ARCHITECTURES: Mapping[str, ArchSpec] = MappingProxyType(_ARCHITECTURES)
"""Read-only view of the registered families, keyed by ``config.model_type``."""


def register_architecture(model_type: str, spec: ArchSpec) -> None:
    """Make ``model_type`` editable with the module paths and norms of ``spec``.

    Registering a model type twice is an error (ConfigError), so two packages cannot silently
    disagree about an architecture.
    """
    if model_type in _ARCHITECTURES:
        raise ConfigError(
            f"model_type {model_type!r} is already registered ({_ARCHITECTURES[model_type]}); "
            "register each model type once"
        )
    if not isinstance(spec, ArchSpec):
        raise ConfigError(
            f"spec of model_type {model_type!r} must be an ArchSpec; received {type(spec).__name__}"
        )
    _ARCHITECTURES[model_type] = spec


_LLAMA_LIKE = ArchSpec("model.layers", "mlp", "mlp.down_proj", NormSpec("model.norm"))
# Gemma's RMSNorm scales by (1 + w); Gemma-1 has no post-feed-forward norm, Gemma-2 and -3 do.
_GEMMA = replace(_LLAMA_LIKE, final_norm=NormSpec("model.norm", offset=1.0))
_GEMMA2_LIKE = replace(_GEMMA, post_ffn_norm=NormSpec("post_feedforward_layernorm", offset=1.0))

register_architecture("gemma", _GEMMA)
register_architecture("gemma2", _GEMMA2_LIKE)
# Gemma 3 (text-only Gemma3ForCausalLM, e.g. gemma-3-270m): Gemma-2's layout. What differs lives
# inside attention (q/k RMSNorms, sliding-window layers between global ones) or in the
# embedding (scaled by sqrt(d_model), tied to the unembedding; edits never touch it), none of it
# at a site or in a down-projection; it has no final soft-capping (lens_logits reads the config).
register_architecture("gemma3_text", _GEMMA2_LIKE)
register_architecture(
    "gpt2",
    ArchSpec(
        "transformer.h",
        "mlp",
        "mlp.c_proj",
        NormSpec("transformer.ln_f", kind="layernorm"),
        down_proj_conv1d=True,
    ),
)
for _model_type in ("llama", "mistral", "qwen2", "qwen3"):
    register_architecture(_model_type, _LLAMA_LIKE)


def get_spec(model_type: str) -> ArchSpec:
    """Return the :class:`ArchSpec` of ``model_type`` or raise UnsupportedArchitectureError."""
    try:
        return _ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported model types: "
            f"{', '.join(sorted(_ARCHITECTURES))}. Register one with "
            "editing.adapters.register_architecture(model_type, ArchSpec(...))."
        ) from None


def _check_site(site: str) -> None:
    if site not in SITES:
        raise ConfigError(f"unknown site {site!r}; expected one of {', '.join(SITES)}")


def hook_name(site: str, layer: int) -> str:
    """TransformerLens / sae-lens hook name of ``site`` at ``layer``."""
    _check_site(site)
    return f"blocks.{int(layer)}.{_HOOK_SUFFIX[site]}"


def parse_hook_name(name: str) -> tuple[str, int]:
    """Inverse of :func:`hook_name`: ``"blocks.3.hook_resid_post"`` -> ``("resid_post", 3)``."""
    m = _HOOK_RE.match(name)
    if m is None:
        raise ConfigError(
            f"unsupported hook name {name!r}; expected blocks.<layer>.hook_resid_post, "
            "blocks.<layer>.hook_mlp_out or blocks.<layer>.mlp.hook_post"
        )
    site = next(s for s, suffix in _HOOK_SUFFIX.items() if suffix == m.group(2))
    return site, int(m.group(1))


def _first(output: Any) -> torch.Tensor:
    """The hidden states of a module output (tensor in transformers 5, tuple in 4.x)."""
    return output[0] if isinstance(output, tuple | list) else output


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple | list):
        return type(output)((new, *output[1:]))
    return new


class ModelAdapter:
    """Architecture-independent access to a ``transformers`` causal LM's layers, weights and sites.

    Patches run before captures at the same site, so a capture always sees the patched value;
    patches stacked at the same site apply innermost first (the most recently entered patch sees
    the model's own activation).
    """

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        self._model_type: str = getattr(config, "model_type", type(model).__name__)
        self._spec = get_spec(self._model_type)
        self._model = model
        try:
            self._layers = model.get_submodule(self._spec.layers)
        except AttributeError as e:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} (model_type {self._model_type!r}) has no module "
                f"{self._spec.layers!r}; pass the *ForCausalLM model, not its base model"
            ) from e
        d_model, d_mlp = self.down_proj_weight(0).shape
        self._d_model, self._d_mlp = int(d_model), int(d_mlp)

    # ---------------------------------------------------------------- properties
    @property
    def model(self) -> nn.Module:
        """The wrapped model."""
        return self._model

    @property
    def model_type(self) -> str:
        """``config.model_type`` of the wrapped model."""
        return self._model_type

    @property
    def spec(self) -> ArchSpec:
        """The :class:`ArchSpec` in use."""
        return self._spec

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self._layers)

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return self._d_model

    @property
    def d_mlp(self) -> int:
        """Number of MLP neurons per layer (input width of the down-projection)."""
        return self._d_mlp

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self._model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters."""
        return next(self._model.parameters()).dtype

    @property
    def final_norm(self) -> nn.Module:
        """The norm applied before the unembedding."""
        return self._model.get_submodule(self._spec.final_norm.path)

    @property
    def unembed(self) -> nn.Module:
        """The unembedding (``lm_head``)."""
        return self._model.get_submodule(self._spec.unembed)

    def lens_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float logits of residual-stream states ``[..., d_model]``, as the model computes its
        output from the last layer's: the final norm, the unembedding (Gemma's is tied to the
        scaled embedding) and the final soft-capping where the config has one (Gemma-2;
        ``tanh(z / c) * c``). Differentiable; the logit lens of any layer's ``resid_post``."""
        logits = self.unembed(self.final_norm(hidden)).float()
        cap = getattr(getattr(self._model, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ---------------------------------------------------------------- layers and weights
    def validate_layer(self, layer: int) -> int:
        """Return ``layer`` if it is a valid layer index, else raise ConfigError."""
        n = self.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
            raise ConfigError(
                f"layer {layer!r} is out of range for this {self._model_type} model with {n} "
                f"layers; valid layers are 0..{n - 1}"
            )
        return layer

    def layer(self, layer: int) -> nn.Module:
        """Decoder layer ``layer``."""
        return self._layers[self.validate_layer(layer)]

    def down_proj_module(self, layer: int) -> nn.Module:
        """The MLP down-projection module of ``layer`` (``nn.Linear`` or GPT-2 ``Conv1D``)."""
        return self.layer(layer).get_submodule(self._spec.down_proj)

    def mlp_out_module(self, layer: int) -> nn.Module:
        """The module whose output is the ``mlp_out`` site of ``layer``."""
        return self.layer(layer).get_submodule(self._spec.mlp_out)

    def down_proj_param_name(self, layer: int) -> str:
        """State-dict key of the down-projection weight of ``layer``.

        E.g. ``model.layers.3.mlp.down_proj.weight`` or ``transformer.h.3.mlp.c_proj.weight``.
        """
        return f"{self._spec.layers}.{self.validate_layer(layer)}.{self._spec.down_proj}.weight"

    def down_proj_weight(self, layer: int) -> torch.Tensor:
        """Down-projection weight of ``layer`` in canonical orientation ``[d_model, d_mlp]``.

        The result shares storage with the parameter (for GPT-2 it is the ``.T`` view). Writes
        through it must be in-place (``W[:, k] = 0``, ``W.sub_(...)``) under ``torch.no_grad()``;
        rebinding the name changes nothing. Prefer :meth:`set_down_proj_weight`.
        """
        w = self.down_proj_module(layer).weight
        return w.T if self._spec.down_proj_conv1d else w

    def write_direction(self, layer: int, direction: torch.Tensor) -> torch.Tensor:
        """Map a residual-space direction to the down-projection's output space of ``layer``.

        Removing the returned vector from the down-projection's output removes ``direction`` from
        what the MLP adds to the residual stream. Where the MLP output goes straight into the
        residual (GPT-2, Llama, Qwen) it is ``direction`` itself. Gemma-2 applies a
        post-feed-forward RMSNorm ``y = x / rms(x) * g`` (``g = 1 + w``, the spec's
        ``post_ffn_norm`` gain); since ``rms`` is a scalar, ``d . y = 0`` exactly when
        ``(d * g) . x = 0``, so the output-space direction is ``d * g``.
        """
        d = direction.to(device=self.device, dtype=torch.float32)
        norm = self._spec.post_ffn_norm
        if norm is not None:
            d = d * norm.gain(self.mlp_out_module(layer)).to(d.device)
        return d

    def set_down_proj_weight(self, layer: int, weight: torch.Tensor) -> None:
        """Copy a canonical ``[d_model, d_mlp]`` tensor into the down-projection of ``layer``."""
        param = self.down_proj_module(layer).weight
        expected = (self._d_model, self._d_mlp)
        if tuple(weight.shape) != expected:
            raise ConfigError(
                f"down-projection weight of layer {layer} must have canonical shape "
                f"[d_model, d_mlp] = {list(expected)}; received {list(weight.shape)}"
            )
        with torch.no_grad():
            param.copy_(self.from_canonical(self._model_type, weight))

    @staticmethod
    def to_canonical(model_type: str, tensor: torch.Tensor) -> torch.Tensor:
        """A raw state-dict down-projection tensor of ``model_type`` -> ``[d_model, d_mlp]``."""
        return tensor.T if get_spec(model_type).down_proj_conv1d else tensor

    @staticmethod
    def from_canonical(model_type: str, tensor: torch.Tensor) -> torch.Tensor:
        """A canonical ``[d_model, d_mlp]`` tensor -> the state-dict layout of ``model_type``."""
        return tensor.T if get_spec(model_type).down_proj_conv1d else tensor

    # ---------------------------------------------------------------- sites and hooks
    def site_dim(self, site: str) -> int:
        """Width of the activation at ``site``: ``d_mlp`` for neurons, else ``d_model``."""
        _check_site(site)
        return self._d_mlp if site == "neurons" else self._d_model

    def hook_name(self, site: str, layer: int) -> str:
        """TransformerLens / sae-lens hook name of ``site`` at ``layer`` (layer validated)."""
        return hook_name(site, self.validate_layer(layer))

    def parse_hook_name(self, name: str) -> tuple[str, int]:
        """Inverse of :meth:`hook_name`; ConfigError on unknown names or layers."""
        site, layer = parse_hook_name(name)
        return site, self.validate_layer(layer)

    def _register(self, site: str, layer: int, fn: Callable[[torch.Tensor], Any], patch: bool):
        """Register a hook calling ``fn(activation)``; if ``patch`` its result replaces it."""
        _check_site(site)
        if site == "neurons":

            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
                x = args[0] if args else kwargs["input"]
                out = fn(x)
                if not patch:
                    return None
                _check_patch(site, layer, x, out)
                return ((out, *args[1:]), kwargs) if args else (args, {**kwargs, "input": out})

            return self.down_proj_module(layer).register_forward_pre_hook(
                pre_hook, with_kwargs=True, prepend=patch
            )
        module = self.layer(layer) if site == "resid_post" else self.mlp_out_module(layer)

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            x = _first(output)
            out = fn(x)
            if not patch:
                return None
            _check_patch(site, layer, x, out)
            return _replace_first(output, out)

        return module.register_forward_hook(hook, prepend=patch)

    @contextmanager
    def capture(
        self, sites: Iterable[tuple[str, int]], detach: bool = True
    ) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
        """Record activations ``[batch, seq, dim]`` of the forward passes run inside the block.

        Yields a dict filled as the model runs: ``(site, layer) -> activation`` (the last forward
        pass wins). With ``detach=False`` the tensors stay in the autograd graph, so the caller can
        ``.retain_grad()`` them before ``backward()``. Hooks are removed on exit, always.
        """
        store: dict[tuple[str, int], torch.Tensor] = {}
        keys = list(dict.fromkeys((s, lay) for s, lay in sites))
        for s, lay in keys:
            _check_site(s)
            self.validate_layer(lay)
        handles = []

        def recorder(key: tuple[str, int]) -> Callable[[torch.Tensor], None]:
            def record(x: torch.Tensor) -> None:
                store[key] = x.detach() if detach else x

            return record

        try:
            for key in keys:
                handles.append(self._register(key[0], key[1], recorder(key), patch=False))
            yield store
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def patch(
        self, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        """During forward passes in the block, replace the activation at ``site`` by ``fn(act)``.

        ``fn`` receives and must return a ``[batch, seq, dim]`` tensor. Patches may be nested; the
        hook is removed on exit, always.
        """
        handle = self._register(site, self.validate_layer(layer), fn, patch=True)
        try:
            yield
        finally:
            handle.remove()


def _check_patch(site: str, layer: int, before: torch.Tensor, after: Any) -> None:
    if not isinstance(after, torch.Tensor) or after.shape != before.shape:
        got = list(after.shape) if isinstance(after, torch.Tensor) else type(after).__name__
        raise ConfigError(
            f"patch function for {site} at layer {layer} must return a tensor of shape "
            f"{list(before.shape)}; received {got}"
        )
