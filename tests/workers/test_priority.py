"""The worker lowers its CPU priority (``FEATUREEDIT_WORKER_NICE``, default 10) so that on a host
shared with the API, model work yields to requests. Checked in subprocesses: niceness cannot be
raised back, so the test process itself is never reniced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.config import WorkerSettings


def _niceness_after(code: str, env: dict[str, str] | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport os; print(os.nice(0))"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


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


def test_run_worker_applies_the_setting(worker_redis_url: str, tmp_path: Path) -> None:
    """A real burst worker on an empty queue runs at the configured niceness."""
    start = os.nice(0)
    code = (
        "from service.config import Settings\n"
        "from workers.worker import run_worker\n"
        f"settings = Settings(home={str(tmp_path)!r}, redis_url={worker_redis_url!r})\n"
        "run_worker(['featureedit-priority-test'], burst=True, settings=settings, "
        "log_level='WARNING')"
    )
    assert _niceness_after(code, {"FEATUREEDIT_WORKER_NICE": "7"}) == min(19, start + 7)
