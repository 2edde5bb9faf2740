"""A private featureedit stack on loopback: its own Redis, the API and worker processes.

Used by the end-to-end tests (``tests/e2e``), ``featureedit drill`` and the service benchmark::

    with LocalStack(root) as stack:          # root/home, root/store, root/logs, root/redis
        stack.start_api()                    # featureedit serve --no-worker (uvicorn, real HTTP)
        worker = stack.start_worker()        # featureedit worker (a real rq worker process)
        stack.start_callback_worker()        # featureedit worker --callbacks-only
        with stack.client(stack.create_key("me")) as http:
            http.post("/v1/erasures", json=...)

Without ``redis_url`` the stack runs its own ``redis-server`` (:class:`~workers.embedded_redis.
EmbeddedRedis`) on a free port with its data in ``root/redis`` and the append-only file on, so
:meth:`LocalStack.restart_redis` keeps the queues; like the embedded Redis of ``featureedit
serve`` it requires a random password, part of the stack's ``REDIS_URL``. Every process gets
``FEATUREEDIT_HOME``, ``FEATUREEDIT_STORE_ROOT`` and ``REDIS_URL`` of the stack and
``FAST_RECOVERY`` tuning (a killed worker's job is retried within about 10 s); its output goes to
``root/logs/NN-<name>.log``.
:func:`link_worlds` makes a fresh home reuse the demo worlds another home has already built.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from editing import settings
from service.records import TERMINAL
from workers.embedded_redis import EmbeddedRedis, free_port

DEMO_MODEL = "demo-small"
# Short heartbeats so a killed worker's job comes back quickly (bound: 6 + 2 + 1 + 1 = 10 s).
FAST_RECOVERY: dict[str, str] = {
    "FEATUREEDIT_WORKER_HEARTBEAT_TTL": "6",
    "FEATUREEDIT_WORKER_HEARTBEAT_INTERVAL": "2",
    "FEATUREEDIT_WORKER_CLEANUP_INTERVAL": "2",
    "FEATUREEDIT_WORKER_SCHEDULER_INTERVAL": "1",
    "FEATUREEDIT_JOB_RETRY_INTERVALS": "[1, 1]",
}


class StackError(RuntimeError):
    """A stack process did not start (the message holds the end of its log)."""


def link_worlds(home: Path, source_home: Path) -> list[str]:
    """Symlink every demo world cached under ``source_home/worlds`` into ``home/worlds``.

    Worlds are read-only once built (checked against their MANIFEST.json on every load), so a
    fresh home can share them. Returns the linked directory names.
    """
    src = source_home / "worlds"
    if not src.is_dir() or src.resolve() == (home / "worlds").resolve():
        return []
    dest = home / "worlds"
    dest.mkdir(parents=True, exist_ok=True)
    linked = []
    for world in sorted(src.iterdir()):
        target = dest / world.name
        if world.is_dir() and (world / "MANIFEST.json").is_file() and not target.exists():
            target.symlink_to(world.resolve(), target_is_directory=True)
            linked.append(world.name)
    return linked


def partial_checkpoints(store_root: Path) -> list[str]:
    """Visible (non-hidden) checkpoint directories without a manifest: should always be empty."""
    root = store_root / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not (p / "manifest.json").is_file()
    )


def leftover_temp_files(store_root: Path) -> list[str]:
    """Temporary files and publish directories left in the store (relative paths)."""
    if not store_root.is_dir():
        return []
    found = []
    for path in store_root.rglob("*"):
        name = path.name
        if name.startswith(".publish-") or (name.startswith(".") and name.endswith(".tmp")):
            found.append(str(path.relative_to(store_root)))
    return sorted(found)


class LocalStack:
    """The processes of one private stack (see the module docstring); a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        home: Path | None = None,
        store: Path | None = None,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        model: str = DEMO_MODEL,
    ) -> None:
        self.root = root
        self.home = home or root / "home"
        self.store_root = store or root / "store"
        self.logs = root / "logs"
        for path in (self.home, self.store_root, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.redis: EmbeddedRedis | None = None
        if redis_url is None:
            self.redis = EmbeddedRedis(directory=root / "redis", appendonly=True).start()
            redis_url = self.redis.url
        self.redis_url = redis_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = settings.child_environment(
            {
                "FEATUREEDIT_HOME": str(self.home),
                "FEATUREEDIT_STORE_ROOT": str(self.store_root),
                "REDIS_URL": redis_url,
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                **FAST_RECOVERY,
                **(env or {}),
                "FEATUREEDIT_REDIS_URL": None,
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    # ------------------------------------------------------------------ processes
    def spawn(
        self, name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``featureedit ARGS...`` with the stack's environment (plus ``env``), logged."""
        self._n += 1
        with (self.logs / f"{self._n:02d}-{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "editing.cli", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def start_api(self, timeout: float = 120) -> subprocess.Popen[bytes]:
        """``featureedit serve --no-worker`` on the stack's port; returns once /healthz is 200."""
        proc = self.spawn("serve", "serve", "--no-worker", "--port", str(self.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"the API exited ({proc.returncode}): {self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return proc
            time.sleep(0.3)
        raise StackError(f"the API did not come up in {timeout:.0f} s: {self.log_text()[-3000:]}")

    def start_worker(
        self, queues: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``featureedit worker`` on the model's queue (default ``featureedit-<model>``).

        ``env`` adds to the stack's environment for this worker only (e.g. its
        ``FEATUREEDIT_WORKER_*`` settings).
        """
        queue = queues or f"featureedit-{self.model}"
        return self.spawn("worker", "worker", "--queues", queue, env=env)

    def wait_workers(self, count: int, timeout: float = 300) -> None:
        """Return once ``count`` rq workers are registered on the stack's Redis (each has imported
        the engine and listens), so a request submitted next is shared among all of them."""
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if len(Worker.all(connection=conn)) >= count:
                    return
                time.sleep(0.2)
        finally:
            conn.close()
        raise StackError(
            f"fewer than {count} workers registered in {timeout:.0f} s: {self.log_text()[-2000:]}"
        )

    def start_callback_worker(
        self, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``featureedit worker --callbacks-only``: delivers callbacks (model workers never do)."""
        return self.spawn("callbacks", "worker", "--callbacks-only", env=env)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """SIGTERM ``proc`` and wait (SIGKILL after ``timeout``); its exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``proc`` and reap it."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def restart_redis(self, down_seconds: float = 0.0, kill: bool = True) -> None:
        """Stop the stack's own Redis (SIGKILL by default), wait, start it again (same port)."""
        if self.redis is None:
            raise StackError("restart_redis needs the stack's own Redis (no redis_url given)")
        self.redis.stop(kill=kill)
        time.sleep(down_seconds)
        self.redis.start()

    def log_text(self) -> str:
        """Every process log of the stack, concatenated."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def close(self) -> None:
        """Kill every process still running and stop the stack's Redis."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    def create_key(self, tenant: str) -> str:
        """A new API key of ``tenant`` in the stack's home."""
        from service.security import create_key

        return create_key(tenant, home=self.home)[1]

    @contextlib.contextmanager
    def client(self, key: str | None = None, timeout: float = 30) -> Iterator[httpx.Client]:
        """An HTTP client of the API (with ``Authorization: Bearer <key>`` when given)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=self.base, headers=headers, timeout=timeout) as c:
            yield c

    def wait_terminal(
        self, http: httpx.Client, erasure_id: str, timeout: float, poll: float = 0.5
    ) -> dict:
        """Poll ``GET /v1/erasures/{id}`` until the status is terminal; the document.

        Raises TimeoutError (with the last document) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        doc: dict = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = http.get(f"/v1/erasures/{erasure_id}")
                if response.status_code == 200:
                    doc = response.json()
                    if doc["status"] in TERMINAL:
                        return doc
            time.sleep(poll)
        raise TimeoutError(f"erasure {erasure_id} not finished in {timeout:.0f} s: {doc}")
