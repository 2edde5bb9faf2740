"""Encryption at rest with the service's key: request blobs and the operator's private records.

A *sealed* blob is a Fernet token (AES-128-CBC + HMAC-SHA256). Keys come, in order, from the
``key`` argument, ``FEATUREEDIT_SECRET_KEY`` (comma-separated Fernet keys: the first encrypts,
every one decrypts, for rotation) or ``$FEATUREEDIT_HOME/keys/request.key``, generated once
(mode 0600). The API seals erasure requests with it; the worker and the command line seal the
operator's private erasure data (revert values, subject names) with the same key, so whoever
holds the service's key — and nobody else — can open them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from editing import settings

SECRET_KEY_ENV = settings.SECRET_KEY_ENV
KEY_FILE = "request.key"
TOKEN_PREFIX = b"gAAAAA"  # every Fernet token starts with its version byte 0x80, base64


class SealKeyError(ValueError):
    """The service key is malformed, or a sealed blob cannot be opened with the keys in force."""


def keys_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """``<home>/keys``: the generated secrets (request key, fingerprint key, API keys...)."""
    return settings.home(home) / "keys"


def secret_file(path: Path, make: bytes) -> bytes:
    """Content of ``path``, created with ``make`` (mode 0600) if absent; first writer wins."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(tmp, path)  # atomic and never overwrites
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def cipher(
    home: str | os.PathLike[str] | None = None, key: str | bytes | None = None
) -> MultiFernet:
    """The service's cipher (see the module doc for where its keys come from)."""
    if key is not None:
        raw = key.decode() if isinstance(key, bytes) else key
        source = "the key argument"
    elif settings.secret_key_text():
        raw, source = settings.secret_key_text() or "", f"${SECRET_KEY_ENV}"
    else:
        path = keys_dir(home) / KEY_FILE
        raw, source = secret_file(path, Fernet.generate_key()).decode("ascii"), str(path)
    try:
        return MultiFernet([Fernet(k.strip()) for k in raw.split(",") if k.strip()])
    except (ValueError, TypeError):
        raise SealKeyError(
            f"The request-blob key in {source} is malformed: expected Fernet keys (32 url-safe "
            "base64-encoded bytes, comma-separated), e.g. from "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`."
        ) from None


def seal(
    data: bytes, *, home: str | os.PathLike[str] | None = None, key: str | bytes | None = None
) -> bytes:
    """``data`` encrypted with the service's key."""
    return cipher(home, key).encrypt(data)


def unseal(
    token: bytes,
    *,
    home: str | os.PathLike[str] | None = None,
    key: str | bytes | None = None,
    what: str = "The sealed blob",
) -> bytes:
    """The data :func:`seal` encrypted; SealKeyError if no key in force opens it."""
    try:
        return cipher(home, key).decrypt(token)
    except InvalidToken:
        raise SealKeyError(
            f"{what} cannot be decrypted with the service key(s) in force: the API, the workers "
            f"and the operator's commands must share ${SECRET_KEY_ENV} or the same "
            f"$FEATUREEDIT_HOME/keys/{KEY_FILE}."
        ) from None


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` looks like a sealed blob (a Fernet token)."""
    return data.startswith(TOKEN_PREFIX)
