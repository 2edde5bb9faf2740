"""featureedit: erase private facts from causal language models by editing SAE-located weights.

The public surface, imported on first use (PEP 562) so that ``import editing`` stays torch-free::

    loaded = editing.load_model("demo-small")                     # registry id -> weights + SAEs
    request = editing.ErasureRequest(model="demo-small", facts=[...])
    result = editing.run_erasure(request, loaded)                 # an Edit, metrics, verdict
    report = result.report()                                      # typed; .to_json() to store
    path = editing.publish_checkpoint(loaded, result.edit, out_root, manifest)
    patch = editing.load_patch(path)                              # a published forward patch
    edit = editing.apply_delta_to_adapter(loaded.adapter, patch)  # applied; returns the full Edit

featureedit never downloads: models and SAEs load from local paths or an already-filled Hugging
Face cache (:func:`editing.settings.hub_defaults`, applied when a model is loaded, sets
``HF_HUB_OFFLINE=1`` unless the caller set it). Importing this package changes nothing in the
process environment.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "editing.models",
    "LoadedModel": "editing.models",
    "ErasureRequest": "editing.request",
    "FactSpec": "editing.request",
    "run_erasure": "editing.erase",
    "ErasureResult": "editing.erase",
    "ErasureReport": "editing.report",
    "load_report": "editing.report",
    "Edit": "editing.edits",
    "publish_checkpoint": "editing.checkpoints",
    "load_patch": "editing.checkpoints",
    "apply_delta_to_adapter": "editing.checkpoints",
    "verify_checkpoint": "editing.checkpoints",
    "ModelAdapter": "editing.adapters",
    "register_architecture": "editing.adapters",
    "EditingError": "editing.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    """The public names next to the module's own attributes."""
    return sorted({*globals(), *__all__})
