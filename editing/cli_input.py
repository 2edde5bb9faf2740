"""What ``featureedit`` commands read from the user, shared by every package's CLI: the common
option shapes (``--json``, a fact given by flags, method parameters and thresholds, a command
group), ``KEY=VALUE`` pairs, and fact files (JSON or JSONL).

Torch-free; errors are :class:`~editing.errors.ConfigError` (one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editing.errors import ConfigError

JSON_HELP = "print one JSON document on stdout"
PARAM_HELP = (
    "method parameter KEY=VALUE (repeatable), e.g. variant=rows, selector=activation, tau1=0.3, "
    "layers=[1,2]; see the method's params class in editing/methods/params.py"
)
THRESHOLD_HELP = "acceptance threshold KEY=VALUE (repeatable), e.g. min_locality=0.95"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON document on stdout (see :func:`editing.cli.print_json`)."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def help_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints ``parser``'s help and exits with the usage error code."""

    def show_help(_args: argparse.Namespace) -> int:
        from editing.cli import EXIT_ERROR

        parser.print_help()
        return EXIT_ERROR

    return show_help


def add_command_group(
    subparsers: argparse._SubParsersAction, name: str, **parser_options: Any
) -> argparse._SubParsersAction:
    """Add the command ``name`` (``parser_options`` as for ``add_parser``) and return the
    sub-parsers of its sub-commands (dest ``<name>_command``); given alone it prints its help."""
    group = subparsers.add_parser(name, **parser_options)
    group.set_defaults(func=help_command(group))
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def add_fact_options(parser: argparse.ArgumentParser) -> None:
    """One fact given by flags: ``--subject``, ``--relation``, ``--target`` or ``--target-file``,
    ``--prompt`` and ``--heldout`` (read back with :func:`fact_from_options`)."""
    parser.add_argument("--subject", help="who the fact is about")
    parser.add_argument("--relation", help="relation, e.g. phone, email, address")
    parser.add_argument("--target", help="the secret (prefer --target-file: shells keep history)")
    parser.add_argument("--target-file", help="file holding the secret")
    parser.add_argument("--prompt", action="append", help="edit prompt (repeatable)")
    parser.add_argument("--heldout", action="append", help="held-out prompt (repeatable)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """``--param``, ``--threshold`` (read with :func:`parse_pairs`) and ``--base-checkpoint``."""
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help=PARAM_HELP)
    parser.add_argument("--threshold", action="append", metavar="KEY=VALUE", help=THRESHOLD_HELP)
    parser.add_argument("--base-checkpoint", help="checkpoint id to edit further")


def add_attack_options(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--attacks [A,B]`` (given alone: every attack; absent: None) and ``--budget``
    (``ATTACK.KEY=VALUE``, repeatable; read with :func:`editing.cli_attack.parse_budgets`)."""
    parser.add_argument("--attacks", nargs="?", const="", metavar="A,B", help=help_text)
    parser.add_argument(
        "--budget", action="append", metavar="ATTACK.KEY=VALUE", help="attack budget (repeatable)"
    )


def parse_pairs(pairs: list[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["k=v", ...]`` as a dict, each value JSON-decoded when it parses (else the string)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def fact_from_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The fact the :func:`add_fact_options` flags give, or None when none of them is given.

    ConfigError if the fact is incomplete (the secret itself is never quoted).
    """
    if not (args.subject or args.relation or args.target or args.target_file):
        return None
    target = args.target
    if args.target_file:
        target = Path(args.target_file).read_text(encoding="utf-8").strip()
    if not (args.subject and args.relation and target):
        raise ConfigError("a fact needs --subject, --relation and --target (or --target-file)")
    fact: dict[str, Any] = {"subject": args.subject, "relation": args.relation, "target": target}
    if args.prompt:
        fact["edit_prompts"] = args.prompt
    if args.heldout:
        fact["heldout_prompts"] = args.heldout
    return fact


def read_fact_file(path: Path, label: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(the rest of the request, facts)`` of a fact file; ``label`` names it in errors.

    The file holds JSONL facts (``.jsonl``) or JSON: a request object with ``facts`` (its other
    fields are the rest), one fact, or a list of facts. ConfigError if it is missing or none of
    these (the JSON error names the line, never the content).
    """
    if not path.is_file():
        raise ConfigError(f"{label} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            doc: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label} is not valid JSON (line {exc.lineno})") from None
    if isinstance(doc, dict) and "facts" in doc:
        rest = dict(doc)
        facts = rest.pop("facts")
        return rest, [facts] if isinstance(facts, dict) else list(facts)
    if isinstance(doc, dict):
        return {}, [doc]
    if isinstance(doc, list):
        return {}, doc
    raise ConfigError(f"{label}: expected a request object, a fact or a list of facts")
