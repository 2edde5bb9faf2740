"""Callback signatures: per tenant, over a timestamp, a delivery id and the body.

The service's *master* callback secret is ``FEATUREEDIT_CALLBACK_SECRET`` or
``$FEATUREEDIT_HOME/keys/callback.key`` (generated once, 0600, like the request key). A tenant's
signing secret is derived from it (:func:`tenant_callback_secret`, HMAC-SHA256 of the tenant
name under the master secret): each tenant gets its own, shown by
``featureedit keys callback-secret --tenant NAME``; none is stored, and knowing one's own secret
tells nothing about another tenant's (so no tenant can forge a callback to another's endpoint).

A callback carries three headers (:func:`callback_headers`)::

    X-Featureedit-Timestamp: <unix seconds>
    X-Featureedit-Delivery:  <random delivery id>
    X-Featureedit-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<delivery id>." + body>

:func:`verify_callback` checks one (constant time) and rejects timestamps more than
:data:`REPLAY_WINDOW` seconds away; docs/security.md has a standalone snippet for receivers.
:func:`sign_body`/:func:`verify_signature` are the bare HMAC of a body.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping

from editing.sealing import keys_dir, secret_file
from service.config import Settings, callback_secret_from_env

SIGNATURE_HEADER = "X-Featureedit-Signature"
TIMESTAMP_HEADER = "X-Featureedit-Timestamp"
DELIVERY_HEADER = "X-Featureedit-Delivery"
SIGNATURE_VERSION = "v1"
REPLAY_WINDOW = 300  # seconds: receivers reject older (or further future) timestamps
TENANT_SECRET_PREFIX = "whsec_"


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


def tenant_callback_secret(master: bytes | str, tenant: str) -> str:
    """``tenant``'s callback signing secret, derived from the master secret (``whsec_<hex>``)."""
    key = master.encode("utf-8") if isinstance(master, str) else master
    mac = hmac.new(key, b"featureedit-callback-v1\0" + tenant.encode("utf-8"), hashlib.sha256)
    return TENANT_SECRET_PREFIX + mac.hexdigest()


def _signed_payload(body: bytes, timestamp: int, delivery_id: str) -> bytes:
    return f"{timestamp}.{delivery_id}.".encode() + body


def sign_callback(body: bytes, secret: str, timestamp: int, delivery_id: str) -> str:
    """The ``X-Featureedit-Signature`` value: ``v1=<hex HMAC-SHA256>`` of timestamp, id, body."""
    mac = hmac.new(secret.encode("utf-8"), _signed_payload(body, timestamp, delivery_id), "sha256")
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def callback_headers(
    body: bytes, secret: str, *, timestamp: int | None = None, delivery_id: str | None = None
) -> dict[str, str]:
    """The signature headers of one delivery of ``body`` (now, a fresh delivery id)."""
    ts = int(time.time()) if timestamp is None else timestamp
    delivery = delivery_id or "dlv_" + secrets.token_hex(12)
    return {
        TIMESTAMP_HEADER: str(ts),
        DELIVERY_HEADER: delivery,
        SIGNATURE_HEADER: sign_callback(body, secret, ts, delivery),
    }


def verify_callback(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: float | None = None,
    window: int = REPLAY_WINDOW,
) -> bool:
    """Whether ``headers`` sign ``body`` under ``secret`` within ``window`` seconds of ``now``.

    ``headers`` is looked up case-insensitively. A receiver should also remember the delivery ids
    it accepted in the last ``window`` seconds and refuse a repeated one.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ts = lower.get(TIMESTAMP_HEADER.lower(), "")
    delivery = lower.get(DELIVERY_HEADER.lower(), "")
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    if not (raw_ts.isascii() and raw_ts.isdigit()) or not delivery or not signature:
        return False
    timestamp = int(raw_ts)
    if abs((time.time() if now is None else now) - timestamp) > window:
        return False
    expected = sign_callback(body, secret, timestamp, delivery)
    return hmac.compare_digest(signature.strip().encode(), expected.encode())


def settings_tenant_secret(settings: Settings, tenant: str) -> str:
    """``tenant``'s callback signing secret under ``settings`` (its callback secret or home)."""
    configured = settings.callback_secret
    master = callback_secret(
        settings.home, configured=configured.get_secret_value() if configured else None
    )
    return tenant_callback_secret(master, tenant)
