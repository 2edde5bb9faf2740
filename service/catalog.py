"""Which models the service offers and which methods each supports (torch-free).

A model is offered if it is in the registry (``editing.registry.load_registry``: the demo
worlds and the registry TOML); local directories, which the CLI accepts as model ids, are not.
``featureedit`` needs SAEs at the requested site; ``neurons`` and ``neuronlens`` work on any
model. (``editing.methods.available_methods`` would say the same but imports torch.)
"""

from __future__ import annotations

import logging

from editing.errors import EditingError
from editing.registry import ModelEntry, load_registry
from editing.request import METHODS, ErasureRequest
from service.config import Settings

log = logging.getLogger(__name__)

SAE_METHODS = frozenset({"featureedit"})


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
    """Methods that can run on ``entry`` (featureedit only with SAEs)."""
    return [m for m in METHODS if m not in SAE_METHODS or entry.saes]


def method_problem(entry: ModelEntry, request: ErasureRequest) -> tuple[list[str], str] | None:
    """Why ``request``'s method cannot run on ``entry`` as ``(loc, message)``, or None if it can."""
    if request.method not in SAE_METHODS:
        return None
    site = request.params.site
    if site not in entry.saes:
        where = ", ".join(sorted(entry.saes)) or "no site"
        return (
            ["body", "method"],
            f"method 'featureedit' needs SAEs at site '{site}', but model '{entry.model_id}' has "
            f"SAEs at {where}; use params.site one of those, or method 'neurons' or 'neuronlens'",
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
