"""Imports point one way: ops → workers → service → editing (docs/architecture.md).

Every import statement of every module (also those inside functions) is read with ``ast``:
``editing`` imports no web, queue or upper-layer code; ``service`` imports no worker or operator
code (it may enqueue with rq, never run a worker); ``workers`` imports no operator tooling.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "editing": ("service", "workers", "ops", "fastapi", "starlette", "uvicorn", "rq", "redis"),
    "service": ("workers", "ops", "rq.worker", "rq.worker_pool"),
    "workers": ("ops",),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)
