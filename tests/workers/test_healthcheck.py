"""The container health checks (workers/healthcheck.py): a real rq worker's heartbeat in the test
Redis, a real HTTP server for the API check, PID 1's command line for the role."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from rq import Worker

from workers.healthcheck import check_api, check_worker, main, pid1_role


def test_worker_check_follows_this_hosts_heartbeat(
    worker_redis_url: str, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = check_worker(worker_redis_url, 480)
    assert not ok and "no worker registered" in message
    worker = Worker(["featureedit-demo"], connection=rconn)
    worker.register_birth()
    worker.heartbeat()
    try:
        assert check_worker(worker_redis_url, 480)[0]
        assert not check_worker(worker_redis_url, -1)[0]  # too old for the limit
        assert not check_worker(worker_redis_url, 480, hostname="some-other-pod")[0]
        monkeypatch.setenv("REDIS_URL", worker_redis_url)
        assert main(["worker"]) == 0
    finally:
        worker.register_death()
    assert not check_worker("redis://127.0.0.1:1/0", 480, timeout=0.5)[0]


def test_api_check_needs_a_200_from_healthz() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert check_api(server.server_address[1]) == (
            True,
            f"http://127.0.0.1:{server.server_address[1]}/healthz: HTTP 200",
        )
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert main(["api", "--port", str(free)]) == 1


def test_role_comes_from_pid1(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/venv/bin/python3\0/opt/venv/bin/uvicorn\0service.main:create_app\0")
    assert pid1_role(cmdline) == "api"
    cmdline.write_bytes(b"/opt/venv/bin/python3\0/opt/venv/bin/featureedit\0worker\0")
    assert pid1_role(cmdline) == "worker"
    assert pid1_role(tmp_path / "missing") == "worker"


def test_api_port_comes_from_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.config import api_port

    monkeypatch.delenv("PORT", raising=False)
    assert api_port() == 8000
    monkeypatch.setenv("PORT", "8123")
    assert api_port() == 8123
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(ValueError, match=r"PORT must be a port number.*'http'"):
        api_port()
