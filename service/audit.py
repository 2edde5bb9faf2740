"""Append-only audit log: one JSON line per action at ``$FEATUREEDIT_HOME/audit/audit.log``.

Each line has ``time``, ``tenant``, ``action``, ``erasure_id``, ``request_id`` and ``outcome``
(plus a few non-secret extras such as the HTTP status, a key id or the client's address).
Nothing a client sent is copied into it except ids, so no secret can reach it. The file is opened
with ``O_APPEND`` and each line is one ``write``, so concurrent writers (threads, API processes,
workers) never interleave within a line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from service.records import utcnow

# Extra fields an audit line may carry (anything else is dropped).
EXTRA_FIELDS = frozenset(
    {"status_code", "key_id", "checkpoint_id", "method", "path", "reason", "client"}
)


class AuditLog:
    """The audit log file; :meth:`record` appends one line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def record(
        self,
        action: str,
        *,
        tenant: str | None,
        outcome: str,
        erasure_id: str | None = None,
        request_id: str | None = None,
        **extra: Any,
    ) -> None:
        """Append one line. ``extra`` keys outside :data:`EXTRA_FIELDS` are ignored."""
        doc: dict[str, Any] = {
            "time": utcnow(),
            "tenant": tenant,
            "action": action,
            "erasure_id": erasure_id,
            "request_id": request_id,
            "outcome": outcome,
        }
        doc.update({k: v for k, v in extra.items() if k in EXTRA_FIELDS and v is not None})
        line = (json.dumps(doc, ensure_ascii=True, default=str) + "\n").encode("ascii")
        with self._lock:
            fd = self._open()
            os.write(fd, line)

    def close(self) -> None:
        """Close the file (it is reopened on the next record)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
