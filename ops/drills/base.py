"""Drills: a registry of named promises, the private stack they run on, and the runner.

A drill is a function ``run(ctx, obs)`` registered with :func:`drill` under a name and a promise
(one sentence: what the system guarantees). It breaks something on the private stack of a
:class:`DrillContext` and records what it saw with :meth:`Observations.check` (a failed check
fails the drill) and :meth:`Observations.note`. :func:`run_drills` runs the selected drills in
registration order, each bounded in time, and returns one :class:`DrillResult` per drill; an
exception inside a drill fails it with its type and (redacted) message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from editing.acceptance import ACCEPT_ALL
from ops.stack import DEMO_MODEL, LocalStack, link_worlds

STORE_TMPFS_SIZE = "256m"
# Every drill erasure runs with ACCEPT_ALL: accepted whatever the metrics and the attacks find,
# so it publishes.


@dataclass
class DrillResult:
    """The outcome of one drill."""

    name: str
    promise: str
    observed: str
    passed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """``{name, promise, observed, pass, seconds}`` (the ``--json`` form)."""
        return {
            "name": self.name,
            "promise": self.promise,
            "observed": self.observed,
            "pass": self.passed,
            "seconds": round(self.seconds, 1),
        }


class Observations:
    """What a drill saw: checks (pass/fail) and notes, in order."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.passed = True

    def check(self, ok: bool, what: str) -> bool:
        """Record a check; a false one fails the drill (shown with a ``FAILED:`` prefix)."""
        self.items.append(what if ok else f"FAILED: {what}")
        self.passed = self.passed and bool(ok)
        return bool(ok)

    def note(self, what: str) -> None:
        """Record a fact that is not a check."""
        self.items.append(what)

    def text(self) -> str:
        """Everything, ``; ``-separated."""
        return "; ".join(self.items)


DrillFunc = Callable[["DrillContext", Observations], None]


@dataclass(frozen=True)
class Drill:
    """A registered drill."""

    name: str
    promise: str
    run: DrillFunc


DRILLS: dict[str, Drill] = {}


def drill(name: str, promise: str) -> Callable[[DrillFunc], DrillFunc]:
    """Register the decorated function as the drill ``name`` (a name can be registered once)."""

    def register(func: DrillFunc) -> DrillFunc:
        if name in DRILLS:
            raise ValueError(f"drill {name!r} is already registered")
        DRILLS[name] = Drill(name, " ".join(promise.split()), func)
        return func

    return register


# ----------------------------------------------------------------------------- the stack
def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``path``; None, or why it could not be mounted."""
    if os.geteuid() != 0:
        return "not root (mounting a tmpfs needs root or CAP_SYS_ADMIN)"
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount failed: {exc}"
    return None if proc.returncode == 0 else f"mount failed: {proc.stderr.strip()[:200]}"


@dataclass
class DrillContext:
    """The private stack the drills share, and what they share about it.

    ``start`` builds it under a fresh temporary directory: a home whose ``worlds/`` links to the
    demo worlds of ``source_home`` (building the small world there first if needed), a store on
    its own tmpfs when mounting is allowed (for the disk-full drill), the stack's own Redis
    (append-only file on), the API and one worker.
    """

    source_home: Path
    fuzz_examples: int = 20
    keep: bool = False
    root: Path | None = None
    stack: LocalStack | None = None
    key: str = ""
    worker: subprocess.Popen[bytes] | None = None
    store_mount_error: str | None = "not started"
    checkpoints: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    _facts: list[dict[str, str]] | None = None
    _pristine: str | None = None
    _model: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle
    def start(self) -> DrillContext:
        """Start the stack (see the class docstring)."""
        from editing.world.build import load_world

        load_world("small", self.source_home, progress=False)
        self.root = Path(tempfile.mkdtemp(prefix="featureedit-drill-"))
        home, store = self.root / "home", self.root / "store"
        store.mkdir(parents=True)
        link_worlds(home, self.source_home)
        self.store_mount_error = _mount_tmpfs(store, STORE_TMPFS_SIZE)
        env = {
            "FEATUREEDIT_SSE_MAX_SECONDS": "2",  # fuzzed event streams end quickly
            "FEATUREEDIT_RATE_LIMIT_WRITE": "100000",
            "FEATUREEDIT_RATE_LIMIT_READ": "1000000",
            "FEATUREEDIT_LOG_LEVEL": "INFO",
        }
        self.stack = LocalStack(self.root, home=home, store=store, env=env, model=DEMO_MODEL)
        self.stack.start_api()
        self.key = self.stack.create_key("drill")
        self.worker = self.stack.start_worker()
        self.stack.start_callback_worker()
        return self

    def close(self) -> None:
        """Stop every process, unmount the store, remove the directory (unless ``keep``)."""
        if self.stack is not None:
            self.stack.close()
        if self.root is not None:
            store = self.root / "store"
            if self.store_mount_error is None:
                subprocess.run(["umount", "-l", str(store)], capture_output=True, timeout=30)
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers
    @property
    def s(self) -> LocalStack:
        """The stack (started)."""
        if self.stack is None:
            raise RuntimeError("the drill stack is not started")
        return self.stack

    @contextlib.contextmanager
    def http(self, key: str | None = None, timeout: float = 30) -> Iterator[httpx.Client]:
        """An HTTP client of the API with the drill's key (or ``key``)."""
        with self.s.client(self.key if key is None else key, timeout=timeout) as c:
            yield c

    def store(self) -> Any:
        """The stack's store, read directly (what a worker or the API would see)."""
        from service.store import FilesystemStore

        return FilesystemStore(self.s.store_root)

    def _load_model(self) -> Any:
        with self._lock:
            if self._model is None:
                from editing.models import load_model

                self._model = load_model(DEMO_MODEL, home=self.s.home, dtype="float32")
            return self._model

    def pristine_sha256(self) -> str:
        """sha256 of the demo model's down-projections as they are on disk."""
        if self._pristine is None:
            from editing.checkpoints import down_proj_sha256

            self._pristine = down_proj_sha256(self._load_model().adapter)
        return self._pristine

    def facts(self, n: int) -> list[dict[str, str]]:
        """``n`` private facts of the small world that the model does produce (distinct people)."""
        if self._facts is None:
            from editing.evaluate import leaks
            from editing.relations import get_relation
            from editing.world.build import load_world

            loaded = self._load_model()
            world = load_world("small", self.s.home, build=False, progress=False)
            found: list[dict[str, str]] = []
            seen: set[str] = set()
            for f in world.private_facts():
                if f.subject in seen or f.relation not in ("phone", "email"):
                    continue
                prompts = get_relation(f.relation).edit_prompts(f.subject)
                if any(leaks(loaded.model, loaded.tokenizer, prompts, f.target)):
                    found.append({"subject": f.subject, "relation": f.relation, "target": f.target})
                    seen.add(f.subject)
                if len(found) >= 8:
                    break
            self._facts = found
        if len(self._facts) < n:
            raise RuntimeError(f"only {len(self._facts)} producible facts in the small world")
        return self._facts[:n]

    def submit(self, http: httpx.Client, facts: Sequence[dict[str, str]]) -> httpx.Response:
        """POST an erasure of ``facts`` with relaxed thresholds (accepted whatever the metrics)."""
        self.secrets.extend(f["target"] for f in facts)
        return http.post(
            "/v1/erasures",
            json={"model": DEMO_MODEL, "facts": list(facts), "thresholds": ACCEPT_ALL},
        )

    def wait_status(self, erasure_id: str, statuses: set[str], timeout: float) -> str:
        """Poll the store until the record's status is one of ``statuses``; the status."""
        from service.records import TERMINAL

        store = self.store()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = store.get_erasure(erasure_id)
            if record is not None and (record.status in statuses or record.status in TERMINAL):
                return record.status
            time.sleep(0.05)
        raise TimeoutError(f"erasure {erasure_id} did not reach {sorted(statuses)} in {timeout} s")

    def ensure_worker(self) -> None:
        """Start a worker if the current one has exited."""
        if self.worker is None or self.worker.poll() is not None:
            self.worker = self.s.start_worker()

    def checkpoint(self, http: httpx.Client) -> str:
        """A published checkpoint id (one an earlier drill made, else a new erasure's)."""
        if self.checkpoints:
            return self.checkpoints[-1]
        self.ensure_worker()
        response = self.submit(http, self.facts(1))
        response.raise_for_status()
        doc = self.s.wait_terminal(http, response.json()["id"], timeout=400)
        if not doc.get("checkpoint_id"):
            raise RuntimeError(f"the erasure published no checkpoint: {doc['status']}")
        self.checkpoints.append(doc["checkpoint_id"])
        return doc["checkpoint_id"]

    def redact(self, text: str) -> str:
        """``text`` with every secret the drills submitted replaced."""
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        return text


# ----------------------------------------------------------------------------- running
def run_drills(
    ctx: DrillContext,
    names: Sequence[str] | None = None,
    on_result: Callable[[DrillResult], None] | None = None,
) -> list[DrillResult]:
    """Run the drills ``names`` (default: all, in registration order) on the started ``ctx``."""
    selected = [DRILLS[n] for n in DRILLS if names is None or n in names]
    results = []
    for d in selected:
        obs = Observations()
        t0 = time.monotonic()
        try:
            d.run(ctx, obs)
        except Exception as exc:
            obs.check(False, ctx.redact(f"the drill raised {type(exc).__name__}: {exc}")[:1500])
        result = DrillResult(d.name, d.promise, obs.text(), obs.passed, time.monotonic() - t0)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def results_json(results: Sequence[DrillResult]) -> str:
    """The ``--json`` document: a list of result objects."""
    return json.dumps([r.to_dict() for r in results], indent=2)
