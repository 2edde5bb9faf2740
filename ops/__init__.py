"""Operator tooling: load test, service benchmark, failure drills, each on a private local stack.

Not needed to run the service: ``featureedit load``, ``featureedit bench --service`` and
``featureedit drill`` (entry points in ``pyproject.toml``) start their own loopback stack
(:mod:`ops.stack`: Redis, API, workers) from the caller's demo worlds.
"""
