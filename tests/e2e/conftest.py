"""The e2e tests reuse the worker tests' fixtures (the erasable small-world fact)."""

from tests.workers.conftest import Fact, erasable_fact, four_facts  # noqa: F401
