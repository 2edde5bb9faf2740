"""Container health checks: ``python -m workers.healthcheck [api|worker|auto]`` exits 0 if healthy.

* ``api``: ``GET http://127.0.0.1:$PORT/healthz`` answers 200 (liveness; readiness, i.e. Redis
  and the store, is ``/readyz``, which orchestrators probe separately).
* ``worker``: a worker running on this host (rq's worker registry in Redis, ``REDIS_URL``) sent a
  heartbeat within ``--max-age`` seconds. rq renews it at least every ``worker_ttl - 15`` s while
  idle (420 s by default) and, in :class:`~workers.worker.ErasureWorker`, every
  ``heartbeat_interval`` s while a job runs; so the default ``--max-age`` is 480 s.
* ``auto`` (default): ``api`` if PID 1 is uvicorn, else ``worker`` (the image's entrypoint execs
  one or the other, see ``deploy/docker-entrypoint.sh``).

Imports neither torch nor the API app: the check costs well under a second.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path


def check_api(port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the API on ``127.0.0.1:port`` answers ``/healthz`` with 200."""
    import httpx

    url = f"http://127.0.0.1:{port}/healthz"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    return status == 200, f"{url}: HTTP {status}"


def check_worker(
    redis_url: str, max_age: float, hostname: str | None = None, timeout: float = 3.0
) -> tuple[bool, str]:
    """Whether a worker on ``hostname`` (default: this host) heartbeat within ``max_age`` s."""
    from redis import Redis
    from redis.exceptions import RedisError
    from rq import Worker

    host = hostname or socket.gethostname()
    try:
        conn = Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
        workers = [w for w in Worker.all(connection=conn) if w.hostname == host]
    except RedisError as exc:
        return False, f"Redis unreachable ({type(exc).__name__})"
    if not workers:
        return False, f"no worker registered for host {host}"
    now = datetime.now(UTC)
    ages = []
    for w in workers:
        beat = w.last_heartbeat
        if beat is not None:
            ages.append((now - beat.replace(tzinfo=beat.tzinfo or UTC)).total_seconds())
    if not ages:
        return False, f"worker(s) on {host} never sent a heartbeat"
    youngest = min(ages)
    return youngest <= max_age, f"last heartbeat {youngest:.0f} s ago (max {max_age:.0f} s)"


def pid1_role(proc: Path = Path("/proc/1/cmdline")) -> str:
    """``"api"`` if PID 1's command line runs uvicorn, else ``"worker"``."""
    try:
        cmdline = proc.read_bytes().replace(b"\0", b" ")
    except OSError:
        return "worker"
    return "api" if b"uvicorn" in cmdline else "worker"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; print one line; 0 if healthy, 1 if not."""
    from workers.config import api_port

    parser = argparse.ArgumentParser(prog="python -m workers.healthcheck", description=__doc__)
    parser.add_argument("role", nargs="?", choices=["api", "worker", "auto"], default="auto")
    parser.add_argument("--port", type=int, default=api_port())
    parser.add_argument("--max-age", type=float, default=480.0, metavar="S")
    args = parser.parse_args(argv)
    role = pid1_role() if args.role == "auto" else args.role
    if role == "api":
        ok, message = check_api(args.port)
    else:
        from service.config import Settings

        ok, message = check_worker(Settings().redis_url, args.max_age)
    print(f"{role}: {'healthy' if ok else 'unhealthy'}: {message}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
