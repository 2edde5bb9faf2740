"""One callback POST, to a pinned address, under one deadline and a reply-size cap.

:func:`post_pinned` sends through httpx's transport layer (``httpcore``) with a network backend
that ignores the URL's host and connects to the address the worker checked
(:func:`service.security.callback_target.resolve_public`): there is no second DNS lookup for an
attacker's resolver to answer differently. The URL keeps its host, so the ``Host`` header and,
for https, the TLS SNI and certificate check name the host, not the address.

Every socket operation (connect, TLS handshake, each read and write) gets the time left until
one overall deadline, not a fresh per-read timeout: a server trickling its reply a byte at a time
is cut when the deadline passes. The reply body is read in chunks and dropped after
``max_reply_bytes``: a 400 MB reply costs the worker one chunk, not 400 MB.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpcore

from service.security.callback_target import IPAddress


class DeadlineExceeded(httpcore.TimeoutException):
    """The overall deadline of the callback passed."""


@dataclass(frozen=True)
class CallbackReply:
    """What the endpoint answered: its status and how much of its body was read."""

    status: int
    bytes_read: int
    truncated: bool


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by ``deadline`` (``time.monotonic()``)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the callback's overall deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read at most ``max_bytes``, waiting no longer than the deadline."""
        return self.inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write ``buffer``, waiting no longer than the deadline."""
        self.inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        """Close the socket."""
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """The TLS stream (SNI and certificate check: the URL's host), under the same deadline."""
        tls = self.inner.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(tls, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        """What the inner stream says (e.g. ``server_addr``)."""
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.SyncBackend):
    """Connects every request to ``address`` (whatever host the URL names), under ``deadline``."""

    def __init__(self, address: IPAddress, deadline: float) -> None:
        self.address = address
        self.deadline = deadline
        self.connected_to: list[tuple[str, int]] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        """A TCP connection to the pinned address on ``port`` (``host`` is not resolved)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the callback's overall deadline passed")
        self.connected_to.append((str(self.address), port))
        stream = super().connect_tcp(
            str(self.address),
            port,
            timeout=left if timeout is None else min(timeout, left),
            local_address=local_address,
            socket_options=socket_options,
        )
        return _DeadlineStream(stream, self.deadline)


def _tls_context() -> ssl.SSLContext:
    """httpx's TLS defaults and CA bundle (certifi); certificates checked against the URL's host."""
    import httpx

    return httpx.create_ssl_context()


def post_pinned(
    url: str,
    address: IPAddress,
    body: bytes,
    headers: dict[str, str],
    *,
    seconds: float,
    max_reply_bytes: int,
    backend: PinnedBackend | None = None,
    tls: ssl.SSLContext | None = None,
) -> CallbackReply:
    """POST ``body`` to ``url`` through a connection to ``address``; the reply's status.

    The whole exchange ends within ``seconds`` (:class:`DeadlineExceeded`, an
    ``httpcore.TimeoutException``, otherwise); at most ``max_reply_bytes`` of the body are read.
    Redirects are not followed. Raises ``httpcore`` errors on connection or protocol failures.
    ``tls``: the TLS context of https URLs (default: httpx's, with its CA bundle).
    """
    backend = backend or PinnedBackend(address, time.monotonic() + seconds)
    with (
        httpcore.ConnectionPool(
            ssl_context=(tls or _tls_context()) if url.lower().startswith("https:") else None,
            network_backend=backend,
            max_connections=1,
            retries=0,
        ) as pool,
        pool.stream(
            "POST",
            url,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            content=body,
            extensions={"timeout": {"connect": seconds, "read": seconds, "write": seconds}},
        ) as response,
    ):
        read = 0
        truncated = False
        for chunk in response.iter_stream():
            read += len(chunk)
            if read > max_reply_bytes:
                truncated = True
                break
        return CallbackReply(response.status, min(read, max_reply_bytes), truncated)
