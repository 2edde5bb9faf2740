"""Which models the service offers and which methods each supports (torch-free).

A model is offered if it is in the registry (``editing.registry.load_registry``: the demo
worlds and the registry TOML); local directories, which the CLI accepts as model ids, are not.
A method registered with ``needs_sae`` (``featureedit``) runs only where the model has SAEs at the
requested site; the others work on any model. Both read the torch-free method registry.
"""

from __future__ import annotations

import logging
from typing import cast

from editing.errors import EditingError
from editing.methods import SaeParams, method_names, method_spec
from editing.registry import ModelEntry, load_registry
from editing.request import ErasureRequest, with_model_params
from service.config import Settings

log = logging.getLogger(__name__)


class RegistryUnavailable(RuntimeError):
    """The registry file is malformed or missing (an operator problem, not the client's)."""


def registered_models(settings: Settings) -> dict[str, ModelEntry]:
    """The registry of ``settings.home`` (RegistryUnavailable if it cannot be read)."""
    try:
        return load_registry(settings.home)
    except (EditingError, OSError) as exc:
        log.error("model registry cannot be loaded", extra={"error": str(exc)})
        raise RegistryUnavailable("The model registry is misconfigured") from exc


def supported_methods(entry: ModelEntry) -> list[str]:
    """Methods that can run on ``entry`` (those that need SAEs only if it has some)."""
    return [m for m in method_names() if not method_spec(m).needs_sae or entry.saes]


def method_problem(entry: ModelEntry, request: ErasureRequest) -> tuple[list[str], str] | None:
    """Why ``request``'s method cannot run on ``entry`` as ``(loc, message)``, or None if it can
    (with the parameters it will run with: the model's own defaults for those it leaves unset)."""
    if not method_spec(request.method).needs_sae:
        return None
    request = with_model_params(request, entry.method_defaults(request.method))
    site = cast(SaeParams, request.params).site  # registration guarantees SaeParams
    if site not in entry.saes:
        where = ", ".join(sorted(entry.saes)) or "no site"
        others = [m for m in method_names() if not method_spec(m).needs_sae]
        return (
            ["body", "method"],
            f"method '{request.method}' needs SAEs at site '{site}', but model "
            f"'{entry.model_id}' has SAEs at {where}; use params.site one of those, or a method "
            f"without SAEs: {', '.join(others)}",
        )
    layers = request.params.layers
    if layers:
        known = set(entry.saes[site].layers)
        missing = sorted(set(layers) - known)
        if missing:
            return (
                ["body", "params", "layers"],
                f"no SAEs at site '{site}' for layers {missing}; layers with SAEs: {sorted(known)}",
            )
    return None
