"""Callback signatures: HMAC-SHA256 of the body under the callback secret.

The secret is ``FEATUREEDIT_CALLBACK_SECRET`` or ``$FEATUREEDIT_HOME/keys/callback.key``; the
header is ``X-Featureedit-Signature: sha256=<hex>`` (:func:`sign_body`, :func:`verify_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from editing.sealing import keys_dir, secret_file
from service.config import callback_secret_from_env

SIGNATURE_HEADER = "X-Featureedit-Signature"


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
