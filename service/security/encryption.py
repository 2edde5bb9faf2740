"""Request blobs: the erasure request, secrets included, stored only encrypted.

Sealed with Fernet (AES-128-CBC + HMAC-SHA256) by :mod:`editing.sealing`. Keys come from
``FEATUREEDIT_SECRET_KEY`` (comma-separated Fernet keys: the first encrypts, every one decrypts,
for rotation) or from ``$FEATUREEDIT_HOME/keys/request.key``, generated once (mode 0600). The API
encrypts (:func:`encrypt_request`); the worker decrypts (:func:`decrypt_request`) with the same
home or environment.
"""

from __future__ import annotations

import json
import os

from editing.request import STORED, ErasureRequest
from editing.sealing import SealKeyError, seal, unseal

RequestKeyError = SealKeyError  # the request-blob key is malformed, or a blob cannot be opened


def _request_json(request: ErasureRequest) -> bytes:
    doc = request.model_dump(mode="json")
    # only the params the client set: the others take the model's defaults when the job runs
    doc["params"] = request.params.model_dump(mode="json", exclude_unset=True)
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
