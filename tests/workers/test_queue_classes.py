"""Queue (GPU) classes: the API enqueues a classed model's jobs on its class's queue, and a worker
started for other models or classes never takes them (real Redis, real rq workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue

from editing.cli import main
from service.config import Settings
from service.queueing import JobQueue
from workers.worker import build_worker, default_queue_names, model_queue_names

CLASSES = {"demo-small": "gpu-24g", "big-a": "gpu-80g", "big-b": "gpu-80g"}


@pytest.fixture
def classed(settings: Settings) -> Settings:
    """The test settings with queue classes."""
    return settings.model_copy(update={"queue_classes": CLASSES})


def test_queue_names_follow_the_classes(classed: Settings) -> None:
    assert classed.queue_name("demo-small") == "featureedit-gpu-24g"
    assert classed.queue_name("demo") == "featureedit-demo"  # no class: its own queue
    assert model_queue_names(classed, ["demo-small", "demo"]) == [
        "featureedit-gpu-24g",
        "featureedit-demo",
    ]
    assert model_queue_names(classed, ["big-a", "big-b"]) == ["featureedit-gpu-80g"]
    assert model_queue_names(classed, classes=["gpu-80g"]) == ["featureedit-gpu-80g"]
    # big-a alone would be handed big-b's jobs by the shared class queue
    with pytest.raises(ValueError, match=r"'gpu-80g' with \['big-b'\].*--classes gpu-80g"):
        model_queue_names(classed, ["big-a"])
    names = default_queue_names(classed)
    assert "featureedit-gpu-24g" in names and "featureedit-demo-small" not in names
    assert "featureedit-callbacks" not in names  # callbacks have their own worker class
    assert len(names) == len(set(names))


def test_a_bad_class_name_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        Settings(queue_classes={"demo": "gpu 24g!"})


@pytest.mark.slow  # runs a real job (model load): ~40 s on a busy 2-core machine
def test_jobs_go_to_the_class_queue_and_only_its_workers_take_them(
    classed: Settings, rconn: redis.Redis, store, fe_home: Path
) -> None:
    from tests.workers.conftest import UNKNOWN_TARGET, submit

    fact = {"subject": "Brigid Draycott", "relation": "email", "target": UNKNOWN_TARGET}
    erasure_id = submit(classed, store, rconn, [fact])
    assert Queue("featureedit-gpu-24g", connection=rconn).job_ids == [erasure_id]
    assert Queue("featureedit-demo-small", connection=rconn).count == 0
    assert JobQueue(rconn, classed).depths()["featureedit-gpu-24g"]["queued"] == 1

    # a worker for another model (or class) leaves the job alone
    other = build_worker(model_queue_names(classed, ["demo"]), settings=classed, connection=rconn)
    assert not other.work(burst=True)
    assert Queue("featureedit-gpu-24g", connection=rconn).job_ids == [erasure_id]
    assert store.get_erasure(erasure_id).status == "queued"

    # a worker of the class takes it
    mine = build_worker(
        model_queue_names(classed, classes=["gpu-24g"]), settings=classed, connection=rconn
    )
    assert mine.work(burst=True)
    record = store.get_erasure(erasure_id)
    assert record.status == "nothing_to_erase" and record.worker == mine.name


def test_worker_cli_refuses_ambiguous_queue_choices(
    classed: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", classed.redis_url)
    monkeypatch.setenv("FEATUREEDIT_QUEUE_CLASSES", '{"big-a": "gpu-80g", "big-b": "gpu-80g"}')
    assert main(["worker", "--models", "big-a", "--burst"]) == 2
    assert "--classes gpu-80g" in capsys.readouterr().err
    assert main(["worker", "--models", "big-a", "--queues", "x", "--burst"]) == 2
    assert "not both" in capsys.readouterr().err
