"""The perf tests reuse the service tests' fixtures (real Redis, an app served by uvicorn)."""

from tests.service.conftest import (  # noqa: F401
    keys,
    live_server,
    rconn,
    redis_url,
    settings,
)
