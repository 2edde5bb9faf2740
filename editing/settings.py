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
from typing import TYPE_CHECKING, Any

from editing.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported only by device() and dtype(): processes that never load a model (the HTTP
# API) use this module, editing.fingerprint and editing.registry without importing torch.
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")


def __getattr__(name: str) -> Any:
    """``DTYPES`` (name -> torch.dtype), built on first access so importing is torch-free."""
    if name == "DTYPES":
        import torch

        return {n: getattr(torch, n) for n in DTYPE_NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_dtype_name(name: str) -> str:
    """``name`` if it is a supported dtype name (torch-free); ConfigError listing them otherwise."""
    if name not in DTYPE_NAMES:
        raise ConfigError(f"Invalid dtype {name!r}: expected one of {sorted(DTYPE_NAMES)}.")
    return name


def home(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the featureedit cache root, creating it if needed."""
    raw = override or os.environ.get("FEATUREEDIT_HOME") or Path.home() / ".cache" / "featureedit"
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def device(override: str | None = None) -> torch.device:
    """Return the torch device to use (argument, then ``FEATUREEDIT_DEVICE``, then ``cpu``)."""
    import torch

    name = override or os.environ.get("FEATUREEDIT_DEVICE") or "cpu"
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"Invalid device {name!r}: expected e.g. 'cpu', 'cuda', 'cuda:1'."
        ) from exc


def dtype(override: str | torch.dtype | None = None) -> torch.dtype:
    """Return the torch dtype to use (argument, then ``FEATUREEDIT_DTYPE``, then float32)."""
    import torch

    if isinstance(override, torch.dtype):
        return override
    name = check_dtype_name(override or os.environ.get("FEATUREEDIT_DTYPE") or "float32")
    return getattr(torch, name)
