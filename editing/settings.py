"""Library settings: cache directory, device and dtype, from arguments or environment variables.

The library reads and writes the process environment here and nowhere else (the service's and
the workers' settings are :mod:`service.config` and :mod:`workers.config`):

- ``FEATUREEDIT_HOME``: cache and store root (default ``~/.cache/featureedit``).
- ``FEATUREEDIT_DEVICE``: torch device (default ``cpu``; e.g. ``cuda:0``).
- ``FEATUREEDIT_DTYPE``: ``float32`` (default), ``bfloat16`` or ``float16``.
- ``FEATUREEDIT_REGISTRY``: extra model registry TOML file merged over the built-in entries.
- ``FEATUREEDIT_FINGERPRINT_KEY``: key for the keyed fingerprint of secrets (hex or text).
- ``FEATUREEDIT_BATCH_SIZE``: rows per scoring batch (default: chosen from the model's vocabulary
  and device, :func:`editing.scoring.default_batch_size`).
- ``FEATUREEDIT_BASELINE_CACHE``: ``1`` (default) keeps the unedited model's evaluation under
  ``$FEATUREEDIT_HOME/baselines/`` and reuses it (:mod:`editing.baseline`); ``0`` turns it off.

and sets the defaults of the Hugging Face libraries (:func:`hub_defaults`: never download).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editing.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported only by device() and dtype(): processes that never load a model (the HTTP
# API) use this module, editing.fingerprint and editing.registry without importing torch.
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
FINGERPRINT_KEY_ENV = "FEATUREEDIT_FINGERPRINT_KEY"
BATCH_SIZE_ENV = "FEATUREEDIT_BATCH_SIZE"
BASELINE_CACHE_ENV = "FEATUREEDIT_BASELINE_CACHE"
REGISTRY_ENV = "FEATUREEDIT_REGISTRY"
SECRET_KEY_ENV = "FEATUREEDIT_SECRET_KEY"
# What featureedit wants from huggingface_hub, transformers and sae-lens (wandb) unless the
# caller set otherwise: no downloads, no advisory warnings, no experiment logging.
HUB_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "WANDB_MODE": "disabled",
}


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


def home(override: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Return the featureedit cache root (argument, then ``FEATUREEDIT_HOME``, then
    ``~/.cache/featureedit``), creating it unless ``create`` is False."""
    raw = override or os.environ.get("FEATUREEDIT_HOME") or Path.home() / ".cache" / "featureedit"
    path = Path(raw).expanduser()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def registry_path() -> str | None:
    """``FEATUREEDIT_REGISTRY`` (an extra registry TOML file), or None when unset or empty."""
    return os.environ.get(REGISTRY_ENV) or None


def fingerprint_key_text() -> str | None:
    """``FEATUREEDIT_FINGERPRINT_KEY`` as set (hex or text), or None when unset."""
    return os.environ.get(FINGERPRINT_KEY_ENV)


def secret_key_text() -> str | None:
    """``FEATUREEDIT_SECRET_KEY`` (the service key's Fernet keys), or None when unset or empty."""
    return os.environ.get(SECRET_KEY_ENV) or None


def batch_size() -> int | None:
    """``FEATUREEDIT_BATCH_SIZE`` (rows per scoring batch), or None when unset or empty (the
    default then depends on the model and device). ConfigError unless a positive integer."""
    raw = (os.environ.get(BATCH_SIZE_ENV) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"Invalid {BATCH_SIZE_ENV}={raw!r}: expected a positive integer.")
    return int(raw)


def baseline_cache_enabled() -> bool:
    """Whether to reuse the unedited model's cached evaluation (``FEATUREEDIT_BASELINE_CACHE``:
    ``1``, the default, or ``0``). ConfigError for any other value."""
    raw = (os.environ.get(BASELINE_CACHE_ENV) or "1").strip()
    if raw not in ("0", "1"):
        raise ConfigError(f"Invalid {BASELINE_CACHE_ENV}={raw!r}: expected 0 or 1.")
    return raw == "1"


def hub_defaults(quiet: bool = False) -> None:
    """Set :data:`HUB_DEFAULTS` (and, if ``quiet``, no download progress bars) in the environment
    where the caller has not set them.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is first imported: call this before
    importing ``transformers`` or ``sae_lens`` (the CLI's entry and :func:`editing.models.
    load_model` do).
    """
    wanted = {**HUB_DEFAULTS, **({"HF_HUB_DISABLE_PROGRESS_BARS": "1"} if quiet else {})}
    for name, value in wanted.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def exported(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (str) or unset (None) environment variables while the block runs; restore every one
    of them on exit.

    The CLI exports its global options (``FEATUREEDIT_HOME``...) this way, so that plugin commands
    and the processes they start see the same settings as the library.
    """
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_or_unset(os.environ, values)
        yield
    finally:
        _set_or_unset(os.environ, saved)


def _set_or_unset(env: MutableMapping[str, str], values: Mapping[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)


def child_environment(updates: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment with ``updates`` applied (None removes a variable): the
    environment of a child process (``featureedit serve``'s API and worker, a private stack)."""
    env = dict(os.environ)
    _set_or_unset(env, updates)
    return env


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


def dtype_name(override: str | None = None) -> str:
    """The dtype's name (argument, then ``FEATUREEDIT_DTYPE``, then float32), torch-free."""
    return check_dtype_name(override or os.environ.get("FEATUREEDIT_DTYPE") or "float32")


def dtype(override: str | torch.dtype | None = None) -> torch.dtype:
    """Return the torch dtype to use (argument, then ``FEATUREEDIT_DTYPE``, then float32)."""
    import torch

    if isinstance(override, torch.dtype):
        return override
    return getattr(torch, dtype_name(override))
