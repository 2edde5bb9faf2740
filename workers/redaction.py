"""Keeping secrets out of what the jobs write: messages, reports, metrics and callbacks.

A request's secrets (its targets) live only in the encrypted request blob; whatever a job writes
elsewhere goes through :func:`redact` (text) or :func:`scrub` (JSON-like values) first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from service.config import Settings


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every (non-empty) secret redacted."""
    from editing.fingerprint import redact

    return redact(text, [s for s in secrets if s])


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with secrets redacted from every string and non-finite floats as None."""
    from editing.fingerprint import redactor

    return _scrub_with(value, redactor([s for s in secrets if s]))


def _scrub_with(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean(str(k)): _scrub_with(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_with(v, clean) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return clean(str(value))


def public_message(text: str, secrets: Iterable[str], settings: Settings) -> str:
    """A user-facing message: one line, secrets redacted, server paths shortened."""
    text = redact(" ".join(text.split()), secrets)
    for path, label in ((settings.store_dir, "<store>"), (settings.home, "<home>")):
        text = text.replace(str(path), label)
    return text[:2000]
