"""What the private-stack commands share: ``featureedit load``, ``featureedit bench --service``
(:mod:`workers.cli_perf`) and ``featureedit drill`` (:mod:`workers.drills.cli`) each start their
own loopback stack (:mod:`workers.stack`) that reuses the demo worlds of the caller's home.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from editing.cli import global_options


def source_home(args: argparse.Namespace) -> Path:
    """The featureedit home whose demo worlds a private stack reuses (``--home`` or the env)."""
    raw = getattr(args, "home", None) or os.environ.get("FEATUREEDIT_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "featureedit"


def add_stack_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    func: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
    json_help: str = "print one JSON document on stdout",
) -> argparse.ArgumentParser:
    """Add the command ``name`` (global options, ``--json``, ``func`` to run); the parser, for the
    command's own options."""
    parser = subparsers.add_parser(
        name, parents=[global_options()], help=help, description=description
    )
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.set_defaults(func=func)
    return parser
