"""Which rq jobs a worker agrees to run: the project's own job functions, with their own arguments.

rq runs whatever importable function a job names. Whoever can write to Redis could therefore run
code on a worker (``subprocess.check_output(["id"])`` enqueued by hand ran as the worker, which
holds the request key). Two defences, applied by every featureedit worker:

* jobs are encoded with rq's :class:`~rq.serializers.JSONSerializer`
  (:data:`service.queueing.JOB_SERIALIZER`): a job's data is never unpickled;
* before a job runs, :func:`refusal` checks it against the worker's allow-list: the function is
  one of the worker class's own (:data:`ERASURE_FUNCTIONS` for model workers,
  :data:`CALLBACK_FUNCTIONS` for callback workers), called with exactly the arguments of its shape
  (:data:`ARGUMENT_SHAPES`: an erasure id; a chunk or evaluation job an erasure id and an index),
  with no instance and no rq success/failure/stopped callback (those name functions rq imports
  and calls too). A refused job is logged (its id, queue and the refused function's name, never its
  arguments), not run, and marked failed without retries; its stored data is replaced by the
  inert name :data:`REFUSED_FUNC` with no arguments.
"""

from __future__ import annotations

import re
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job

from service.queueing import JOB_FUNC
from workers.callbacks import CALLBACK_FUNC
from workers.chunks import CHUNK_FUNC, EVAL_FUNC, FINISH_FUNC, MAX_CHUNKS, MERGE_FUNC

ERASURE_FUNCTIONS: frozenset[str] = frozenset(
    {JOB_FUNC, CHUNK_FUNC, MERGE_FUNC, EVAL_FUNC, FINISH_FUNC}
)
CALLBACK_FUNCTIONS: frozenset[str] = frozenset({CALLBACK_FUNC})
# the positional arguments of each job function: "id" an erasure id, "index" a chunk (or fact
# range) index
ARGUMENT_SHAPES: dict[str, tuple[str, ...]] = {
    JOB_FUNC: ("id",),
    CHUNK_FUNC: ("id", "index"),
    MERGE_FUNC: ("id",),
    EVAL_FUNC: ("id", "index"),
    FINISH_FUNC: ("id",),
    CALLBACK_FUNC: ("id",),
}
ERASURE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
REFUSED_FUNC = "<refused>"  # what a refused job's stored function name becomes
CALLBACK_HOOKS = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")


def shown_name(name: object, limit: int = 80) -> str:
    """A job's function name as logged: its repr, cut to ``limit`` characters."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def argument_problem(func_name: str, args: Any, kwargs: Any) -> str | None:
    """What is wrong with ``args``/``kwargs`` for ``func_name``'s shape, or None."""
    shape = ARGUMENT_SHAPES[func_name]
    wanted = " and ".join("one erasure id" if k == "id" else "one chunk index" for k in shape)
    if kwargs or not isinstance(args, (list, tuple)) or len(args) != len(shape):
        return f"{func_name} takes exactly {wanted}"
    for kind, value in zip(shape, args):
        if kind == "id" and not (isinstance(value, str) and ERASURE_ID_RE.fullmatch(value)):
            return f"{func_name}: an argument is not an erasure id"
        if kind == "index" and not (
            type(value) is int and 0 <= value < MAX_CHUNKS  # not a bool, not a float
        ):
            return f"{func_name}: an argument is not a chunk index"
    return None


def refusal(job: Job, allowed: frozenset[str]) -> str | None:
    """Why ``job`` must not run on a worker allowing ``allowed`` functions, or None.

    The reason names the function (never the arguments, which may be anything).
    """
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return "its data is not a JSON-encoded job"
    if func_name not in allowed:
        return f"function {shown_name(func_name)} is not on this worker's allow-list"
    if instance is not None:
        return "it names an instance method"
    problem = argument_problem(func_name, args, kwargs)
    if problem:
        return problem
    hooks = [h.strip("_") for h in CALLBACK_HOOKS if getattr(job, h, None)]
    if hooks:
        return f"it carries rq callbacks ({', '.join(hooks)})"
    return None
