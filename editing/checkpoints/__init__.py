"""Edits on disk: the published patch, the operator's revert data, applying, publishing.

One module per concept:

* :mod:`~editing.checkpoints.manifest` — ``manifest.json`` constants, hashes, reading and
  verifying a published checkpoint (no torch: the API serves checkpoints with it alone);
* :mod:`~editing.checkpoints.patch` — the forward patch a checkpoint publishes (indices and new
  values only);
* :mod:`~editing.checkpoints.revert` — the private revert data (pre-edit values), never published;
* :mod:`~editing.checkpoints.apply` — applying a patch, or reverting with revert data, in memory
  or on safetensors files;
* :mod:`~editing.checkpoints.publish` — writing a content-addressed checkpoint;
* :mod:`~editing.checkpoints.migrate` — rewriting format-1 checkpoints, which carried their undo.

The names below are importable from ``editing.checkpoints`` directly; they load their module on
first use, so ``import editing.checkpoints.manifest`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "manifest": (
        "DELTA_DIR",
        "MANIFEST",
        "MANIFEST_FORMAT",
        "MANIFEST_FORMAT_VERSION",
        "SAFE_WEIGHTS",
        "SAFE_WEIGHTS_INDEX",
        "LegacyCheckpointError",
        "code_version",
        "read_manifest",
        "verify_checkpoint",
    ),
    "patch": ("Patch", "LayerPatch", "save_patch", "load_patch", "DELTA_JSON", "DELTA_TENSORS"),
    "revert": ("revert_bytes", "edit_from_revert_bytes", "write_revert_file", "read_revert_file"),
    "apply": ("apply_delta_files", "apply_delta_to_adapter", "bind_patch"),
    "publish": ("publish_checkpoint", "down_proj_sha256", "assert_no_secrets"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first access."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
