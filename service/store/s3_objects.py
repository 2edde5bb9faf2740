"""Objects under one prefix of an S3 bucket: reads with ETags, conditional writes, paginated
listing and short leases, the building blocks of :class:`service.store.s3.S3Store`.

Conditional writes use ``If-None-Match: *`` (create only) and ``If-Match: <ETag>`` (replace only
that version) on PutObject (AWS S3 since 2024, MinIO, moto); a 412 (or a 409 conflict) answers a
failed condition and :meth:`S3Objects.put` returns False.

A *lease* (:meth:`S3Objects.lease`) is an object ``locks/<name>`` created with
``If-None-Match: *``; a lease older than ``ttl`` by the server's clock is taken over with
``If-Match`` on its ETag, so one taker wins; it is deleted on release (or expires by itself).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# kind -> (error codes, HTTP status) of the object store's answer
_ERROR_KINDS: dict[str, tuple[frozenset[str], int]] = {
    "missing": (frozenset({"NoSuchKey", "404", "NotFound"}), 404),
    "precondition": (frozenset({"PreconditionFailed", "412"}), 412),
    "conflict": (frozenset({"ConditionalRequestConflict", "409"}), 409),
}


class S3StoreError(RuntimeError):
    """The object store refused or failed a request the store cannot recover from."""


def make_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client (retries, timeouts; path-style addressing for a custom endpoint).

    Credentials come from boto3's standard chain.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"} if endpoint_url else None,
        ),
    )


def error_code(exc: Exception) -> tuple[str, int]:
    """``(error code, HTTP status)`` of a botocore ``ClientError`` (``("", 0)`` if unknown)."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_error(exc: Exception, *kinds: str) -> bool:
    """Whether ``exc`` answers one of ``kinds``: ``missing``, ``precondition``, ``conflict``."""
    code, status = error_code(exc)
    return any(code in _ERROR_KINDS[k][0] or status == _ERROR_KINDS[k][1] for k in kinds)


class S3Objects:
    """The objects under ``prefix`` of ``bucket``, reached through a boto3 ``client``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    def get(self, key: str) -> tuple[bytes, str] | None:
        """``(body, etag)`` of ``key``, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_error(exc, "missing"):
                return None
            raise
        return obj["Body"].read(), obj["ETag"]

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> bool:
        """Put ``data``; with a condition, False (nothing written) when it fails."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            self.client.put_object(**kwargs)
        except ClientError as exc:
            conditional = if_none_match or if_match is not None
            if conditional and is_error(exc, "precondition", "conflict"):
                return False
            if if_match is not None and is_error(exc, "missing"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Delete ``key`` (a missing key is no error)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def head(self, key: str) -> dict[str, Any] | None:
        """The HeadObject answer of ``key``, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_error(exc, "missing"):
                return None
            raise

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        return self.head(key) is not None

    def keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Keys under ``prefix`` in ascending order (paginated)."""
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", []):
                yield item["Key"]

    def upload_file(self, path: Path, key: str) -> None:
        """Upload the file at ``path`` to ``key``."""
        self.client.upload_file(str(path), self.bucket, key)

    def download_file(self, key: str, path: Path) -> None:
        """Download ``key`` into the file at ``path``."""
        self.client.download_file(self.bucket, key, str(path))

    @contextmanager
    def lease(self, name: str, ttl: float, timeout: float) -> Iterator[None]:
        """Hold ``locks/<name>`` (see the module docstring); TimeoutError after ``timeout`` s."""
        from botocore.exceptions import ClientError

        key = self.key("locks", name)
        token = json.dumps({"holder": f"{os.getpid()}-{secrets.token_hex(8)}"}).encode()
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if self.put(key, token, if_none_match=True):
                break
            head = self.head(key)
            if head is None:
                continue  # released meanwhile
            server_now = email.utils.parsedate_to_datetime(
                head["ResponseMetadata"]["HTTPHeaders"].get("date", "")
            )
            age = (server_now - head["LastModified"]).total_seconds()
            if age > ttl and self.put(key, token, if_match=head["ETag"]):
                log.warning("took over a stale store lease %s (%.0f s old)", name, age)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"store lease {name} is held by another process; try again")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            try:
                self.delete(key)
            except ClientError as exc:  # the lease expires by itself
                log.warning("could not release store lease %s: %s", name, error_code(exc)[0])
