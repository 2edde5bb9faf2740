"""API keys: create, list, revoke, authenticate.

A key is ``fe_<43 url-safe characters>`` (256 random bits). Only its sha256 is stored, in
``$FEATUREEDIT_HOME/keys/api_keys.json`` (mode 0600, atomic writes under a lock) with the tenant,
a key id (``key_<hex>``, safe to show and log), the creation and revocation times.
:func:`authenticate` compares hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editing.sealing import keys_dir
from service.records import utcnow
from service.store import file_lock, valid_tenant, write_atomic

KEY_PREFIX = "fe_"
KEY_ID_PREFIX = "key_"
KEYS_FILE = "api_keys.json"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """An API key as stored (never the key itself)."""

    key_id: str
    tenant: str
    created_at: str
    revoked_at: str | None = None

    def public_dict(self) -> dict[str, Any]:
        """JSON form for listings."""
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "active": self.revoked_at is None,
        }


class KeyStore:
    """The API-key file ``<dir>/api_keys.json``: create, list, revoke, authenticate."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.path = self.dir / KEYS_FILE
        self._cache: tuple[tuple[int, int, int], list[dict[str, Any]]] | None = None

    def _load(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == ident:
            return self._cache[1]
        entries = json.loads(self.path.read_bytes()).get("keys", [])
        self._cache = (ident, entries)
        return entries

    def _save(self, entries: list[dict[str, Any]]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps({"format": "featureedit-api-keys", "keys": entries}, indent=1)
        write_atomic(self.path, data.encode("utf-8"), mode=0o600)

    def create_key(self, tenant: str) -> tuple[str, str]:
        """A new key for ``tenant``: ``(key_id, key)``. The key is not stored; show it once."""
        if not valid_tenant(tenant):
            raise ValueError(
                f"invalid tenant name {tenant!r}: use letters, digits, '.', '_' and '-' "
                "(at most 64 characters, starting with a letter or digit)"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = KEY_ID_PREFIX + secrets.token_hex(6)
        with file_lock(self.dir / ".api_keys.lock"):
            entries = list(self._load())
            entries.append(
                {
                    "key_id": key_id,
                    "tenant": tenant,
                    "sha256": _sha256_hex(key),
                    "created_at": utcnow(),
                    "revoked_at": None,
                }
            )
            self._save(entries)
        return key_id, key

    def list_keys(self) -> list[KeyInfo]:
        """Every key (active and revoked), oldest first."""
        return [
            KeyInfo(e["key_id"], e["tenant"], e["created_at"], e.get("revoked_at"))
            for e in self._load()
        ]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke ``key_id`` (idempotent); KeyError listing nothing secret if unknown."""
        with file_lock(self.dir / ".api_keys.lock"):
            entries = [dict(e) for e in self._load()]
            for e in entries:
                if e["key_id"] == key_id:
                    if e.get("revoked_at") is None:
                        e["revoked_at"] = utcnow()
                        self._save(entries)
                    return KeyInfo(e["key_id"], e["tenant"], e["created_at"], e["revoked_at"])
        raise KeyError(f"no API key with id {key_id!r}; `featureedit keys list` shows the ids")

    def identify(self, key: str | None) -> KeyInfo | None:
        """The active key matching ``key``, or None. Compares every stored hash in constant time."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 256:
            return None
        digest = _sha256_hex(key)
        found: dict[str, Any] | None = None
        for e in self._load():
            if hmac.compare_digest(e["sha256"], digest) and e.get("revoked_at") is None:
                found = e
        if found is None:
            return None
        return KeyInfo(found["key_id"], found["tenant"], found["created_at"])

    def authenticate(self, key: str | None) -> str | None:
        """The tenant of an active key, or None."""
        info = self.identify(key)
        return info.tenant if info else None


def create_key(tenant: str, home: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``(key_id, key)`` of a new API key for ``tenant`` (see :meth:`KeyStore.create_key`)."""
    return KeyStore(keys_dir(home)).create_key(tenant)


def list_keys(home: str | os.PathLike[str] | None = None) -> list[KeyInfo]:
    """Every API key (no key material)."""
    return KeyStore(keys_dir(home)).list_keys()


def revoke(key_id: str, home: str | os.PathLike[str] | None = None) -> KeyInfo:
    """Revoke an API key by id."""
    return KeyStore(keys_dir(home)).revoke(key_id)


def authenticate(key: str | None, home: str | os.PathLike[str] | None = None) -> str | None:
    """The tenant of an active API key, or None."""
    return KeyStore(keys_dir(home)).authenticate(key)
