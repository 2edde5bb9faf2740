"""Errors raised by the editing library.

Every error names what was received, what was expected and how to fix it. Each subclass also
inherits the matching builtin so callers may catch either::

    EditingError
     ├── ConfigError(ValueError)            bad parameter, request field or registry entry
     │    ├── UnknownModelError(KeyError)   model id not in the registry
     │    ├── UnsupportedArchitectureError  model_type without an adapter
     │    └── SAEMismatchError              SAE d_in / hook does not fit the model site
     ├── NotFoundError(FileNotFoundError)   a model, SAE or checkpoint missing on disk / offline
     ├── CorruptCacheError                  a cache entry failed its integrity check
     └── CancelledError                     the job was cancelled mid-run (weights restored)
"""

from __future__ import annotations


class EditingError(Exception):
    """Base class of every error raised by :mod:`editing`."""


class ConfigError(EditingError, ValueError):
    """A parameter, request field or registry entry is invalid."""


class UnknownModelError(ConfigError, KeyError):
    """A model id is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedArchitectureError(ConfigError):
    """A ``transformers`` model type has no adapter."""


class SAEMismatchError(ConfigError):
    """An SAE does not fit the site it is used at (``d_in`` or hook mismatch)."""


class NotFoundError(EditingError, FileNotFoundError):
    """A model, SAE or checkpoint cannot be found locally (no downloads are attempted)."""


class CorruptCacheError(EditingError):
    """A cached artifact failed its integrity check; it must be rebuilt."""


class CancelledError(EditingError):
    """The erasure was cancelled while it ran (the model was restored)."""
