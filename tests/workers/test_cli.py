"""The worker CLI helpers: queue names, embedded Redis, URL masking, report scrubbing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from workers import cli
from workers.config import WorkerSettings
from workers.embedded_redis import EmbeddedRedis, free_port, redis_answers, redis_server_binary
from workers.redaction import scrub


def test_default_queues_are_one_per_model_and_callbacks_have_their_own_worker(
    settings: Settings, rconn: Any
) -> None:
    from functools import partial

    from workers.worker import CallbackWorker, ErasureWorker, default_queue_names
    from workers.worker import build_worker as build

    build_worker = partial(build, connection=rconn)
    names = default_queue_names(settings)
    assert {"featureedit-demo", "featureedit-demo-small"} <= set(names)
    assert "featureedit-callbacks" not in names
    callbacks = build_worker(settings=settings, callbacks_only=True)
    assert isinstance(callbacks, CallbackWorker)
    assert [q.name for q in callbacks.queues] == ["featureedit-callbacks"]
    assert isinstance(build_worker(["featureedit-demo"], settings=settings), ErasureWorker)
    with pytest.raises(ValueError, match="never by a model worker"):
        build_worker(["featureedit-demo", "featureedit-callbacks"], settings=settings)
    with pytest.raises(ValueError, match="serves 'featureedit-callbacks' only"):
        build_worker(["featureedit-demo"], settings=settings, callbacks_only=True)


def test_commands_are_registered() -> None:
    from editing.cli import build_parser

    args = build_parser().parse_args(["worker", "--queues", "a,b", "--burst", "--device", "cpu"])
    assert args.func is cli.cmd_worker and args.queues == "a,b" and args.burst
    assert args.device == "cpu"
    args = build_parser().parse_args(["serve", "--port", "8123", "--no-worker"])
    assert args.func is cli.cmd_serve and args.port == 8123 and args.no_worker
    assert args.host == "127.0.0.1" and args.workers == 1


def test_safe_url_masks_passwords() -> None:
    assert cli.safe_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert cli.safe_url("redis://u:hunter2@db/1") == "redis://u:***@db/1"
    assert cli.safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_worker_command_says_when_redis_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:pw@127.0.0.1:{free_port()}/0")
    monkeypatch.delenv("FEATUREEDIT_REDIS_URL", raising=False)
    args = argparse.Namespace(queues=None, burst=True, cache_size=None, device=None, dtype=None)
    assert cli.cmd_worker(args) == 2
    err = capsys.readouterr().err
    assert "is not reachable" in err and "pw" not in err


def test_embedded_redis_starts_and_stops() -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install featureedit[embedded-redis])")
    with EmbeddedRedis() as server:
        assert redis_answers(server.url)
        directory = server.dir
    assert not redis_answers(server.url, timeout=0.3)
    assert directory is not None and not directory.exists()


def test_embedded_redis_requires_its_password(tmp_path: Path) -> None:
    """Each embedded Redis has a random password: a local process without it cannot queue jobs;
    the password is in a 0600 config file, not on redis-server's command line (``ps``)."""
    import redis

    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install featureedit[embedded-redis])")
    with EmbeddedRedis(directory=tmp_path / "redis") as server, EmbeddedRedis() as other:
        assert server.password != other.password and len(server.password) >= 32
        assert redis_answers(server.url)
        bare = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
        with pytest.raises(redis.exceptions.AuthenticationError):
            bare.rpush("rq:queue:featureedit-callbacks", b"job")
        wrong = redis.Redis(host="127.0.0.1", port=server.port, password=other.password)
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert server.password.encode() not in cmdline
        config = tmp_path / "redis" / "redis.conf"
        assert config.stat().st_mode & 0o777 == 0o600
        assert cli.safe_url(server.url).count("***") == 1 and server.password not in cli.safe_url(
            server.url
        )


def test_serve_falls_back_to_an_embedded_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install featureedit[embedded-redis])")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("FEATUREEDIT_REDIS_URL", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_LOCAL_REDIS", f"redis://127.0.0.1:{free_port()}/0")
    url, embedded, error = cli._resolve_redis()
    try:
        assert error is None and isinstance(embedded, EmbeddedRedis) and url == embedded.url
        assert redis_answers(url)
    finally:
        if embedded is not None:
            embedded.stop()
    monkeypatch.setattr("workers.embedded_redis.redis_server_binary", lambda: None)
    url, embedded, error = cli._resolve_redis()
    assert url is None and embedded is None
    assert "no redis-server binary was found" in error and "embedded-redis" in error


def test_scrub_redacts_and_drops_non_finite_numbers() -> None:
    doc = {"a": "phone 555-0101 here", "555-0101": [1.5, float("nan"), {"b": float("inf")}]}
    assert scrub(doc, ["555-0101"]) == {
        "a": "phone [REDACTED] here",
        "[REDACTED]": [1.5, None, {"b": None}],
    }


def test_worker_settings_validate_the_heartbeat() -> None:
    assert WorkerSettings().recovery_bound(5) == 55
    with pytest.raises(ValueError, match="less than half"):
        WorkerSettings(heartbeat_ttl=10, heartbeat_interval=5)
