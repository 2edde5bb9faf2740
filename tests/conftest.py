"""Shared fixtures: an isolated featureedit home for the session, the small demo world and model.

The session's cache lives in ``$FEATUREEDIT_TEST_HOME`` when set (reused across runs: the small
world is built once, ~35-60 s on a CPU) and in a fresh temporary directory otherwise (what CI does).
``FEATUREEDIT_HOME`` points there for the whole session, so no test touches the user's cache.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

# Variables that would make the session depend on the developer's machine.
_UNSET = ("FEATUREEDIT_REGISTRY",)


def reachable_redis(url: str, variable: str) -> str:
    """``url`` if a Redis answers there, else skip the calling tests saying how to fix it."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis at {url} is unreachable ({exc}); start redis-server or set {variable}")
    return url


@contextlib.contextmanager
def flushed_redis(url: str) -> Iterator[Any]:
    """A connection to the test database at ``url``, flushed before and after."""
    import redis

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    try:
        yield conn
    finally:
        conn.flushdb()
        conn.close()


def environment(values: Mapping[str, str | None]) -> contextlib.AbstractContextManager[None]:
    """Set (str) or unset (None) environment variables; restore every one of them on exit."""
    from editing.settings import exported

    return exported(values)


@pytest.fixture(scope="session", autouse=True)
def fe_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's featureedit home (also exported as ``FEATUREEDIT_HOME``)."""
    raw = os.environ.get("FEATUREEDIT_TEST_HOME")
    home = Path(raw).expanduser().resolve() if raw else tmp_path_factory.mktemp("featureedit-home")
    home.mkdir(parents=True, exist_ok=True)
    with environment({"FEATUREEDIT_HOME": str(home), **dict.fromkeys(_UNSET)}):
        yield home


@pytest.fixture(scope="session")
def small_world(fe_home: Path):
    """The small demo world (built on first use, then loaded from the session's cache)."""
    from editing.world.build import load_world

    return load_world("small", fe_home, progress=False)


@pytest.fixture(scope="session")
def small_model(small_world, fe_home: Path):
    """The small demo world's model loaded through the registry (``demo-small``)."""
    from editing.models import load_model

    return load_model("demo-small", home=fe_home)


@pytest.fixture
def seed() -> int:
    """Seed torch's global generator (returns the seed)."""
    import torch

    torch.manual_seed(0)
    return 0


def erased_as_published(small_model, spec: dict, params: dict | None = None, **kw) -> bool:
    """Whether one erasure of ``spec`` on demo-small is accepted as the service decides it: the
    greedy criteria, then the default attacks and limits (:func:`editing.attack_gate.default_plan`).
    ``kw`` goes to :func:`editing.erase.run_erasure`."""
    from editing.attack_gate import attack_result, default_plan
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    request = ErasureRequest(model="demo-small", facts=[spec], params=params or {})
    result = run_erasure(request, small_model, **kw)
    if result.status == "succeeded":
        result = attack_result(result, request, small_model, default_plan())
    return result.status == "succeeded"


def _first_erased(small_model, facts, what: str):
    """The first of ``facts`` that default FeatureEdit erases as the service publishes it
    (:func:`erased_as_published`) and that the feature projection alone (``refine="none"``)
    erases greedily too: its located features carry the erasure, which tests of locate,
    relocation and the paper's variants rely on (RuntimeError naming ``what``)."""
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    def projection_erases(fact) -> bool:
        request = ErasureRequest(model="demo-small", facts=[fact.spec()], params={"refine": "none"})
        return run_erasure(request, small_model, leak_samples=1).status == "succeeded"

    for fact in facts:
        spec = fact.spec()
        if projection_erases(fact) and erased_as_published(small_model, spec, leak_samples=1):
            return fact
    raise RuntimeError(f"no {what} of the small world is erasable with default FeatureEdit")


@pytest.fixture(scope="session")
def erasable_fact(small_world, small_model):
    """A private fact of the small world that default FeatureEdit erases (found once per session).

    The small world exists to keep tests fast; not every one of its facts is erasable under the
    default acceptance thresholds, so tests that need a successful erasure use this one.
    """
    return _first_erased(small_model, small_world.private_facts()[:40], "fact")


@pytest.fixture(scope="session")
def erasable_digit_fact(small_world, small_model, erasable_fact):
    """Like ``erasable_fact``, but its secret has at least 3 digits (exposure is defined for it)."""

    def digits(fact) -> int:
        return sum(ch.isdigit() for ch in fact.target)

    if digits(erasable_fact) >= 3:
        return erasable_fact
    facts = [f for f in small_world.private_facts()[:80] if digits(f) >= 3]
    return _first_erased(small_model, facts, "digit fact")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real S3-compatible server (``moto_server``, see tests/s3_server.py) on loopback.

    Exports its test credentials as ``AWS_*`` for the session, as a deployment would.
    """
    from tests.s3_server import CREDENTIALS, moto_server

    with environment(CREDENTIALS), moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url
