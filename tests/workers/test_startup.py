"""Worker start-up: it lowers its CPU priority (``FEATUREEDIT_WORKER_NICE``, default 10) so that on
a host shared with the API model work yields to requests, and it imports the erasure engine before
taking a job (so a worker's first job does not pay ~10 s of imports). Checked in subprocesses:
niceness cannot be raised back, so the test process itself is never reniced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.config import WorkerSettings


def _niceness_after(code: str, env: dict[str, str] | None = None) -> int:
    return int(_last_line(code + "\nimport os; print(os.nice(0))", env))


def _last_line(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_nice_setting_is_bounded() -> None:
    assert WorkerSettings().nice == 10
    assert WorkerSettings(nice=0).nice == 0
    for bad in (-1, 20):
        with pytest.raises(ValidationError):
            WorkerSettings(nice=bad)


def test_lower_priority_adds_to_the_niceness() -> None:
    start = os.nice(0)
    code = "from workers.worker import lower_priority; lower_priority(5)"
    assert _niceness_after(code) == min(19, start + 5)
    assert _niceness_after("from workers.worker import lower_priority; lower_priority(0)") == start


def _burst_worker(home: Path, redis_url: str) -> str:
    return (
        "import sys\n"
        "from service.config import Settings\n"
        "from workers.worker import run_worker\n"
        "assert 'torch' not in sys.modules\n"
        f"settings = Settings(home={str(home)!r}, redis_url={redis_url!r})\n"
        "run_worker(['featureedit-startup-test'], burst=True, settings=settings, "
        "log_level='WARNING')"
    )


def test_run_worker_applies_the_setting(worker_redis_url: str, tmp_path: Path) -> None:
    """A real burst worker on an empty queue runs at the configured niceness."""
    start = os.nice(0)
    code = _burst_worker(tmp_path, worker_redis_url)
    assert _niceness_after(code, {"FEATUREEDIT_WORKER_NICE": "7"}) == min(19, start + 7)


def test_run_worker_imports_the_engine_before_any_job(
    worker_redis_url: str, tmp_path: Path
) -> None:
    code = _burst_worker(tmp_path, worker_redis_url) + (
        "\nprint('editing.erase' in sys.modules and 'torch' in sys.modules)"
    )
    assert _last_line(code) == "True"
