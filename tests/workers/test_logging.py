"""Worker logging: every line JSON (rq's own included), job lines carry erasure and job ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from workers.worker import configure_worker_logging

NAMES = ("workers", "editing", "service", "rq", "rq.worker")


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Put the loggers' handlers, levels and propagation back (caplog needs propagation)."""
    saved = {}
    for name in NAMES:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
        logger.handlers.clear()  # start as a fresh worker process does
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_worker_logging_makes_rq_and_job_lines_json(
    restore_loggers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq.logutils import setup_loghandlers

    from service.logs import log_context

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_worker_logging("INFO")
    configure_worker_logging("INFO")  # idempotent: still one handler each
    for name in NAMES[:4]:  # one JSON handler each (pytest may add its capture handlers)
        handlers = logging.getLogger(name).handlers
        assert sum(getattr(h, "_featureedit_json", False) for h in handlers) == 1, name
    setup_loghandlers("INFO", name="rq.worker")  # what rq's Worker.work() calls
    assert logging.getLogger("rq.worker").handlers == []  # rq saw ours and added none

    logging.getLogger("rq.worker").info("Job OK (%s)", "er_1")
    with log_context(erasure_id="er_1", job_id="er_1"):
        logging.getLogger("workers.jobs").warning("erasure %s: failed", "er_1")
    logging.getLogger("editing.erase").info("outside a job")

    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["logger"] for x in lines] == ["rq.worker", "workers.jobs", "editing.erase"]
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line)
        assert line["ts"].endswith("Z")
    assert lines[0]["msg"] == "Job OK (er_1)" and "erasure_id" not in lines[0]
    assert lines[1]["erasure_id"] == "er_1" and lines[1]["job_id"] == "er_1"
    assert lines[1]["level"] == "WARNING"
    assert "erasure_id" not in lines[2]  # the context ended with the job
