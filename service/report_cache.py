"""Rendered reports (HTML, PDF) cached by content hash, so a report is rendered once, not per read.

The key is the sha256 of everything a rendering depends on (format, erasure id, status, history
and the stored report, as canonical JSON), so a changed record renders anew and an unchanged one
is served from memory. A small LRU per API process (``Settings.report_cache_entries``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

Rendered = TypeVar("Rendered", str, bytes)


def report_hash(fmt: str, report: Mapping[str, Any], **inputs: Any) -> str:
    """sha256 of the canonical JSON of ``fmt``, ``report`` and the other rendering inputs."""
    doc = {"format": fmt, "report": report, **inputs}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReportCache:
    """LRU of rendered reports keyed by :func:`report_hash`; counts renders and hits."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[str, str | bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.renders = 0
        self.hits = 0

    def render(
        self,
        fmt: str,
        renderer: Callable[..., Rendered],
        report: dict[str, Any],
        *,
        erasure_id: str,
        status: str,
        history: Sequence[Mapping[str, Any]],
    ) -> Rendered:
        """``renderer(report, erasure_id=, status=, history=)``, from the cache when the same
        inputs were rendered before."""
        key = report_hash(fmt, report, erasure_id=erasure_id, status=status, history=history)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return cached  # type: ignore[return-value]
        page = renderer(report, erasure_id=erasure_id, status=status, history=list(history))
        with self._lock:
            self.renders += 1
            if self.entries > 0:
                self._items[key] = page
                while len(self._items) > self.entries:
                    self._items.popitem(last=False)
        return page
