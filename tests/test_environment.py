"""Settings read the environment; nothing else does (issue #12, step 6).

Each layer has one settings module; every other module asks it. The allow-list of exceptions is
explicit and meant to shrink: an exception that no longer reads the environment fails the test too.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULES = {"editing/settings.py", "service/config.py", "workers/config.py"}
EXCEPTIONS: set[str] = set()
ENVIRONMENT_ACCESS = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b")


def _source_files() -> list[Path]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = [pattern.rstrip("*") for pattern in find["find"]["include"]]
    files = [f for package in packages for f in (ROOT / package).rglob("*.py")]
    return sorted(files + list((ROOT / "scripts").rglob("*.py")))


def _readers() -> set[str]:
    return {
        str(f.relative_to(ROOT))
        for f in _source_files()
        if ENVIRONMENT_ACCESS.search(f.read_text(encoding="utf-8"))
    }


def test_only_settings_modules_touch_the_environment() -> None:
    files = _source_files()
    assert any(f.parts[-2:] == ("ops", "stack.py") for f in files)  # the scan covers every package
    extra = _readers() - SETTINGS_MODULES - EXCEPTIONS
    assert not extra, (
        f"{sorted(extra)} read or write os.environ; ask the layer's settings module instead "
        f"({', '.join(sorted(SETTINGS_MODULES))})"
    )


def test_the_exceptions_are_still_needed() -> None:
    fixed = EXCEPTIONS - _readers()
    assert not fixed, f"{sorted(fixed)} no longer touch the environment: drop them from EXCEPTIONS"
