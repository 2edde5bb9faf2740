"""API keys, request-blob encryption and callback signatures.

API keys
    ``fe_<43 url-safe characters>`` (256 random bits). Only their sha256 is stored, in
    ``$FEATUREEDIT_HOME/keys/api_keys.json`` (mode 0600, atomic writes under a lock) with the
    tenant, a key id (``key_<hex>``, safe to show and log), the creation and revocation times.
    :func:`authenticate` compares hashes in constant time.

Request blobs
    The erasure request (with its secrets) is stored only encrypted, with Fernet (AES-128-CBC +
    HMAC-SHA256). Keys come from ``FEATUREEDIT_SECRET_KEY`` (comma-separated Fernet keys: the first
    encrypts, every one decrypts, for rotation) or from ``$FEATUREEDIT_HOME/keys/request.key``,
    generated once (mode 0600). The API encrypts (:func:`encrypt_request`); the worker decrypts
    (:func:`decrypt_request`) with the same home or environment.

Callbacks
    A callback body is signed with HMAC-SHA256 under the callback secret
    (``FEATUREEDIT_CALLBACK_SECRET`` or ``$FEATUREEDIT_HOME/keys/callback.key``):
    header ``X-Featureedit-Signature: sha256=<hex>`` (:func:`sign_body`, :func:`verify_signature`).
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

from editing.request import STORED, ErasureRequest
from editing.sealing import (
    SealKeyError,
    keys_dir,
    seal,
    secret_file,
    unseal,
)
from service.config import callback_secret_from_env
from service.records import utcnow
from service.store import file_lock, valid_tenant, write_atomic

KEY_PREFIX = "fe_"
KEY_ID_PREFIX = "key_"
KEYS_FILE = "api_keys.json"
SIGNATURE_HEADER = "X-Featureedit-Signature"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- API keys
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


# ----------------------------------------------------------------------------- request blobs
RequestKeyError = SealKeyError  # the request-blob key is malformed, or a blob cannot be opened


def _request_json(request: ErasureRequest) -> bytes:
    doc = request.model_dump(mode="json")
    for fact_doc, fact in zip(doc["facts"], request.facts, strict=True):
        fact_doc["target"] = fact.target.get_secret_value()
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def encrypt_request(
    request: ErasureRequest,
    *,
    home: str | os.PathLike[str] | None = None,
    key: str | bytes | None = None,
) -> bytes:
    """The request, secrets included, as a Fernet token (what the store keeps)."""
    return seal(_request_json(request), home=home, key=key)


def decrypt_request(
    blob: bytes,
    *,
    home: str | os.PathLike[str] | None = None,
    key: str | bytes | None = None,
) -> ErasureRequest:
    """The request :func:`encrypt_request` encrypted (RequestKeyError if no key opens it)."""
    plain = unseal(blob, home=home, key=key, what="The request blob")
    return ErasureRequest.model_validate_json(plain, context=STORED)  # older blobs too


# ----------------------------------------------------------------------------- callbacks
def callback_secret(
    home: str | os.PathLike[str] | None = None, *, configured: str | None = None
) -> bytes:
    """The callback signing secret: ``configured`` (e.g. ``Settings.callback_secret``), else
    ``FEATUREEDIT_CALLBACK_SECRET``, else ``<home>/keys/callback.key`` (generated once, 0600)."""
    if configured:
        return configured.encode("utf-8")
    env = callback_secret_from_env()
    if env:
        return env.encode("utf-8")
    return secret_file(keys_dir(home) / "callback.key", secrets.token_hex(32).encode("ascii"))


def sign_body(body: bytes, secret: bytes | str) -> str:
    """The ``X-Featureedit-Signature`` value of ``body``: ``"sha256=<hex HMAC-SHA256>"``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, signature: str | None, secret: bytes | str) -> bool:
    """Whether ``signature`` (a header value) signs ``body`` under ``secret`` (constant time)."""
    if not signature:
        return False
    return hmac.compare_digest(signature.strip(), sign_body(body, secret))
