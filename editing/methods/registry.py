"""The method registry: name -> params class, capabilities and (lazily imported) implementation.

Torch-free: the HTTP API, the CLIs and request validation read it without loading the ML stack;
:func:`get_method` imports a method's implementation only when one is built. Adding a method is
one module (its params class and its implementation) and one :func:`register_method` call;
registering a name twice is an error. The built-in methods are registered at the bottom.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from editing.errors import ConfigError
from editing.methods.params import (
    FeatureEditParams,
    MethodParams,
    NeuronLensParams,
    NeuronParams,
    SaeParams,
)

if TYPE_CHECKING:
    from editing.methods.base import Method

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_IMPL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its parameters, what it needs and produces, where it is implemented."""

    name: str
    params_cls: type[MethodParams]
    needs_sae: bool
    produces_checkpoint: bool
    impl: str  # "package.module:Class", imported on first use
    description: str

    def load(self) -> type[Method]:
        """The implementation class (imports its module, and with it torch)."""
        module, _, attr = self.impl.partition(":")
        try:
            return cast("type[Method]", getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"Method {self.name!r} is registered with impl {self.impl!r}, which cannot be "
                f"imported ({exc}); fix the register_method call."
            ) from exc


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    params_cls: type[MethodParams],
    *,
    needs_sae: bool,
    produces_checkpoint: bool,
    impl: str,
    description: str = "",
) -> MethodSpec:
    """Register method ``name``; ConfigError if the name is taken or the registration is invalid.

    ``params_cls`` validates the request's ``params`` (a :class:`MethodParams` subclass; a
    subclass of :class:`SaeParams` when ``needs_sae``, since the SAEs are checked at
    ``params.site``). ``produces_checkpoint`` is False for inference-time methods (metrics only).
    ``impl`` is ``"module:Class"``; the class takes the params and implements
    :class:`editing.methods.base.Method`.
    """
    if name in _REGISTRY:
        raise ConfigError(
            f"Method {name!r} is already registered (impl {_REGISTRY[name].impl}); "
            "pick another name."
        )
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"Method name {name!r} is invalid: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting with a letter."
        )
    if not (isinstance(params_cls, type) and issubclass(params_cls, MethodParams)):
        raise ConfigError(f"Method {name!r}: params_cls must subclass MethodParams.")
    if needs_sae and not issubclass(params_cls, SaeParams):
        raise ConfigError(
            f"Method {name!r} needs SAEs, so its params class must subclass SaeParams "
            f"(for params.site); {params_cls.__name__} does not."
        )
    if not _IMPL.fullmatch(impl):
        raise ConfigError(f"Method {name!r}: impl must look like 'package.module:Class'.")
    spec = MethodSpec(name, params_cls, needs_sae, produces_checkpoint, impl, description)
    _REGISTRY[name] = spec
    return spec


def method_names() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The registration of ``name``; ConfigError listing the registered methods."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"Unknown method {name!r}; available methods are {method_names()}."
        ) from None


def get_method(name: str, params: MethodParams) -> Method:
    """Build method ``name`` from ``params`` (an instance of its params class)."""
    spec = method_spec(name)
    if not isinstance(params, spec.params_cls):
        raise ConfigError(
            f"Method {name!r} takes {spec.params_cls.__name__}, got {type(params).__name__}."
        )
    return spec.load()(params)


register_method(
    "featureedit",
    FeatureEditParams,
    needs_sae=True,
    produces_checkpoint=True,
    impl="editing.methods.featureedit:FeatureEdit",
    description="Edit the down-projections along SAE features that carry the fact.",
)
register_method(
    "neurons",
    NeuronParams,
    needs_sae=False,
    produces_checkpoint=True,
    impl="editing.methods.neurons:NeuronBaseline",
    description="Zero the down-projection columns of knowledge neurons (integrated gradients).",
)
register_method(
    "neuronlens",
    NeuronLensParams,
    needs_sae=False,
    produces_checkpoint=False,
    impl="editing.methods.neuronlens:NeuronLens",
    description="Mask knowledge neurons at inference while in the fact's range (metrics only).",
)
