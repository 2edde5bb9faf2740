"""API keys, request-blob encryption and callback signatures.

* :mod:`service.security.keys`: API keys (:class:`KeyStore`; :func:`create_key`,
  :func:`list_keys`, :func:`revoke`, :func:`authenticate`), stored as hashes only;
* :mod:`service.security.encryption`: request blobs (:func:`encrypt_request`,
  :func:`decrypt_request`, :data:`RequestKeyError`), sealed with :mod:`editing.sealing`;
* :mod:`service.security.signing`: callback signatures, per tenant (:func:`callback_secret`,
  :func:`tenant_callback_secret`, :func:`callback_headers`, :func:`verify_callback`);
* :mod:`service.security.callback_target`: where a callback may go (host normalisation,
  public-address check, one DNS lookup).
"""

from __future__ import annotations

from editing.sealing import keys_dir
from service.security.encryption import RequestKeyError, decrypt_request, encrypt_request
from service.security.keys import (
    KEY_ID_PREFIX,
    KEY_PREFIX,
    KEYS_FILE,
    KeyInfo,
    KeyStore,
    authenticate,
    create_key,
    list_keys,
    revoke,
)
from service.security.signing import (
    SIGNATURE_HEADER,
    callback_headers,
    callback_secret,
    sign_body,
    tenant_callback_secret,
    verify_callback,
    verify_signature,
)

__all__ = [
    "KEYS_FILE",
    "KEY_ID_PREFIX",
    "KEY_PREFIX",
    "SIGNATURE_HEADER",
    "KeyInfo",
    "KeyStore",
    "RequestKeyError",
    "authenticate",
    "callback_headers",
    "callback_secret",
    "create_key",
    "decrypt_request",
    "encrypt_request",
    "keys_dir",
    "list_keys",
    "revoke",
    "sign_body",
    "tenant_callback_secret",
    "verify_callback",
    "verify_signature",
]
