"""Library settings: cache directory, device and dtype, from arguments or environment variables.

- ``FEATUREEDIT_HOME``: cache and store root (default ``~/.cache/featureedit``).
- ``FEATUREEDIT_DEVICE``: torch device (default ``cpu``; e.g. ``cuda:0``).
- ``FEATUREEDIT_DTYPE``: ``float32`` (default), ``bfloat16`` or ``float16``.
- ``FEATUREEDIT_REGISTRY``: extra model registry TOML file merged over the built-in entries.
- ``FEATUREEDIT_FINGERPRINT_KEY``: key for the keyed fingerprint of secrets (hex or text).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from editing.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def home(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the featureedit cache root, creating it if needed."""
    raw = override or os.environ.get("FEATUREEDIT_HOME") or Path.home() / ".cache" / "featureedit"
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def device(override: str | None = None) -> torch.device:
    """Return the torch device to use (argument, then ``FEATUREEDIT_DEVICE``, then ``cpu``)."""
    name = override or os.environ.get("FEATUREEDIT_DEVICE") or "cpu"
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Invalid device {name!r}: expected e.g. 'cpu', 'cuda', 'cuda:1'.") from exc


def dtype(override: str | torch.dtype | None = None) -> torch.dtype:
    """Return the torch dtype to use (argument, then ``FEATUREEDIT_DTYPE``, then float32)."""
    if isinstance(override, torch.dtype):
        return override
    name = override or os.environ.get("FEATUREEDIT_DTYPE") or "float32"
    if name not in DTYPES:
        raise ConfigError(f"Invalid dtype {name!r}: expected one of {sorted(DTYPES)}.")
    return DTYPES[name]
