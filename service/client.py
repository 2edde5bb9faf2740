"""A small synchronous client of the featureedit HTTP API (httpx).

    from service.client import FeatureeditClient

    with FeatureeditClient("http://127.0.0.1:8000", api_key) as fe:
        accepted = fe.submit({"model": "demo", "facts": [{"subject": "...", "relation": "phone",
                                                          "target": "..."}]})
        record = fe.wait(accepted["id"], timeout=600)
        if record["checkpoint_id"]:
            fe.download_checkpoint(record["checkpoint_id"], "out/")

Errors come back as :class:`APIError` (status code, ``detail``, request id). :meth:`submit` sends
an ``Idempotency-Key`` (a random one if not given) and retries on 429 and connection errors with
the same key, so a retry never creates a second erasure.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "rejected", "failed", "cancelled", "nothing_to_erase"})
_CHUNK = 1 << 20


class APIError(Exception):
    """An error response of the API (or a transport failure, with ``status_code`` 0)."""

    def __init__(self, status_code: int, detail: Any, request_id: str | None = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.request_id = request_id
        super().__init__(self._message())

    def _message(self) -> str:
        detail = self.detail
        if isinstance(detail, list):  # validation errors
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'request'}: {e.get('msg')}"
                for e in detail
                if isinstance(e, dict)
            )
        where = f" (request id {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status_code}: {detail}{where}" if self.status_code else str(detail)


class ChecksumError(APIError):
    """A downloaded file does not match the checkpoint manifest's sha256."""


def _safe_relpath(name: str) -> PurePosixPath:
    parts = name.split("/")
    if not name or "\\" in name or "\x00" in name or any(p in ("..", ".", "") for p in parts):
        raise APIError(0, f"refusing unsafe file name in manifest: {name!r}")
    return PurePosixPath(name)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FeatureeditClient:
    """Client of one featureedit service with one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "featureedit-client"},
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FeatureeditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            body = response.json()
            detail = body.get("detail", body) if isinstance(body, dict) else body
        except ValueError:
            detail = response.text[:500] or response.reason_phrase
        raise APIError(response.status_code, detail, response.headers.get("x-request-id"))

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise APIError(0, f"cannot reach {self.base_url}: {exc}") from exc
        self._raise_for(response)
        return response

    # -- erasures
    def submit(
        self,
        request: dict[str, Any],
        idempotency_key: str | None = None,
        *,
        retries: int = 5,
    ) -> dict[str, Any]:
        """Submit an erasure request (the JSON body); returns ``{"id", "status", "status_url"}``.

        Retries on 429 (after Retry-After) and on connection errors with the same key.
        """
        key = idempotency_key or uuid.uuid4().hex
        for attempt in range(retries + 1):
            try:
                response = self._http.post(
                    "/v1/erasures", json=request, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise APIError(0, f"cannot reach {self.base_url}: {exc}") from exc
                time.sleep(min(2**attempt, 30))
                continue
            if response.status_code == 429 and attempt < retries:
                time.sleep(min(float(response.headers.get("retry-after", "1")), 60.0))
                continue
            self._raise_for(response)
            return response.json()
        raise AssertionError("unreachable")

    def get(self, erasure_id: str) -> dict[str, Any]:
        """The erasure's public record."""
        return self._request("GET", f"/v1/erasures/{erasure_id}").json()

    def list(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page: ``{"items": [...], "next_cursor": ...}`` (newest first)."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/erasures", params=params).json()

    def cancel(self, erasure_id: str) -> dict[str, Any]:
        """Cancel a queued erasure, or request cancellation of a running one."""
        return self._request("DELETE", f"/v1/erasures/{erasure_id}").json()

    def wait(self, erasure_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the erasure ends; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(erasure_id)
            if record["status"] in TERMINAL:
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"erasure {erasure_id} still {record['status']} after {timeout} s"
                )
            time.sleep(poll)

    def events(
        self, erasure_id: str, last_event_id: int | None = None, timeout: float = 3600.0
    ) -> Iterator[dict[str, Any]]:
        """Status events from the SSE stream until a terminal one (reconnects, resuming)."""
        deadline = time.monotonic() + timeout
        last = last_event_id
        while time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/erasures/{erasure_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=60.0),
                ) as response:
                    if not response.is_success:
                        response.read()
                        self._raise_for(response)
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line == "" and data:
                            event = json.loads("\n".join(data))
                            data = []
                            last = int(event["seq"])
                            yield event
                            if event["status"] in TERMINAL:
                                return
            except httpx.TransportError:
                time.sleep(1.0)
        raise TimeoutError(f"no terminal event for erasure {erasure_id} within {timeout} s")

    def report(self, erasure_id: str, format: str = "json") -> dict[str, Any] | str | bytes:
        """The report: a dict, the HTML page (``format="html"``) or the PDF bytes (``"pdf"``)."""
        response = self._request(
            "GET", f"/v1/erasures/{erasure_id}/report", params={"format": format}
        )
        if format == "pdf":
            return response.content
        return response.text if format == "html" else response.json()

    # -- checkpoints
    def checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """The checkpoint's manifest and file list."""
        return self._request("GET", f"/v1/checkpoints/{checkpoint_id}").json()

    def download_checkpoint(
        self, checkpoint_id: str, dest_dir: str | os.PathLike[str], resume: bool = True
    ) -> Path:
        """Download every file of a checkpoint into ``dest_dir``; return it.

        Each file goes to ``<name>.part`` first; with ``resume`` a partial file continues with a
        Range request (``If-Range`` on the ETag, so a changed file restarts). Each file is
        checked against the manifest's sha256 before it is renamed into place; files already
        present and intact are skipped. ``manifest.json`` is written last.
        """
        info = self.checkpoint(checkpoint_id)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for entry in info["files"]:
            rel = _safe_relpath(entry["name"])
            target = dest.joinpath(*rel.parts)
            if (
                target.is_file()
                and target.stat().st_size == entry["size"]
                and _sha256(target) == entry["sha256"]
            ):
                continue  # already downloaded and intact
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download_file(checkpoint_id, entry, target, resume)
        (dest / "manifest.json").write_text(
            json.dumps(info["manifest"], indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return dest

    def _download_file(
        self, checkpoint_id: str, entry: dict[str, Any], target: Path, resume: bool
    ) -> None:
        part = target.with_name(target.name + ".part")
        etag = f'"{entry["sha256"]}"'
        offset = part.stat().st_size if resume and part.is_file() else 0
        if offset > entry["size"]:
            offset = 0
        headers = {}
        if 0 < offset < entry["size"]:
            headers = {"Range": f"bytes={offset}-", "If-Range": etag}
        elif offset == entry["size"]:
            headers = {}  # complete .part: verify below without downloading
        url = f"/v1/checkpoints/{checkpoint_id}/files/{entry['name']}"
        if offset != entry["size"]:
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if not response.is_success:
                        response.read()
                        self._raise_for(response)
                    mode = "ab" if response.status_code == 206 else "wb"
                    with part.open(mode) as f:
                        for chunk in response.iter_bytes(_CHUNK):
                            f.write(chunk)
            except httpx.TransportError as exc:
                raise APIError(0, f"download of {entry['name']} interrupted: {exc}") from exc
        if _sha256(part) != entry["sha256"]:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                0, f"{entry['name']}: sha256 does not match the manifest; download it again"
            )
        os.replace(part, target)
