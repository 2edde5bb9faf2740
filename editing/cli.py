"""The ``featureedit`` command line.

Every command is a function ``cmd_x(args) -> int`` (the exit code) attached to an argparse
sub-parser with ``set_defaults(func=cmd_x)``. Built-in commands are added by
:func:`register_commands`; other packages add theirs through the entry-point group
``featureedit.commands`` without ``editing`` importing them. Each entry point names a callable that
takes the sub-parsers object::

    # service/cli.py
    from editing.cli import global_options

    def register(subparsers):
        p = subparsers.add_parser("serve", parents=[global_options()], help="run the HTTP API")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=cmd_serve)

    # pyproject.toml
    [project.entry-points."featureedit.commands"]
    serve = "service.cli:register"

Conventions: heavy imports (torch, transformers, sae-lens) happen inside command functions, so
``featureedit --help`` stays fast; ``--json`` prints one JSON document on stdout (use
:func:`print_json`), while progress bars and logs go to stderr; library errors
(:class:`editing.errors.EditingError`, pydantic ``ValidationError``) become one line on stderr and
exit code 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any, TextIO

from editing import settings
from editing.cli_input import help_command
from editing.errors import EditingError

ENTRY_POINT_GROUP = "featureedit.commands"
EXIT_OK = 0
EXIT_ERROR = 2  # a user-facing error (also argparse's exit code for usage errors)
DTYPE_CHOICES = ("float32", "bfloat16", "float16")  # = editing.settings.DTYPES (torch-free here)

Command = Callable[[argparse.Namespace], int]

# The real stdout while a --json command runs with stray prints redirected to stderr.
_json_out: ContextVar[TextIO | None] = ContextVar("featureedit_json_out", default=None)


# --------------------------------------------------------------------------- output helpers


def print_json(doc: Any) -> None:
    """Print ``doc`` as the command's JSON document on stdout."""
    out = _json_out.get() or sys.stdout
    out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    out.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (floats with 4 significant digits, None as ``-``)."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    text = [[cell(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- models command


def cmd_models(args: argparse.Namespace) -> int:
    """List the registered models (or describe the ones named)."""
    from editing.registry import get_entry, load_registry, registry_file

    if args.model_ids:
        entries = [get_entry(mid, args.home) for mid in args.model_ids]
    else:
        entries = list(load_registry(args.home).values())
    reg_file = registry_file(args.home)
    doc = {
        "registry_file": str(reg_file) if reg_file else None,
        "models": [e.public_dict() for e in entries],
    }
    if args.json:
        print_json(doc)
        return EXIT_OK
    rows = []
    for m in doc["models"]:
        saes = "; ".join(
            f"{site}: layers {','.join(map(str, s['layers'])) or '-'}"
            for site, s in m["saes"].items()
        )
        rows.append((m["model_id"], m["source"], m["dtype"], m["device"], saes or "-"))
    print(format_table(["model_id", "source", "dtype", "device", "saes"], rows))
    where = reg_file or f"{settings.home(args.home) / 'models.toml'} (not present)"
    print(f"\nRegistry file: {where}. Set FEATUREEDIT_REGISTRY to use another.")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def global_options() -> argparse.ArgumentParser:
    """Parent parser with the global options, for sub-commands (``parents=[global_options()]``).

    Its defaults are suppressed, so an option given after the command overrides the same option
    given before it, and one not given keeps the top-level value.
    """
    parser = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _add_global_options(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--home",
        metavar="DIR",
        help="cache directory for worlds and models (env FEATUREEDIT_HOME; "
        "default ~/.cache/featureedit)",
    )
    group.add_argument(
        "--device", help="torch device, e.g. cpu, cuda:0 (env FEATUREEDIT_DEVICE; default cpu)"
    )
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        help="weights dtype (env FEATUREEDIT_DTYPE; default float32)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars; only errors on stderr"
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the built-in commands: ``world build``, ``world info`` (:mod:`editing.cli_world`),
    ``models`` and the engine's
    (``erase``, ``demo``, ``apply-delta``: :mod:`editing.cli_engine`; ``bench``:
    :mod:`editing.cli_bench`) and the analyses' (``analyze``: :mod:`editing.cli_analysis`)."""
    common = global_options()

    models = subparsers.add_parser(
        "models",
        parents=[common],
        help="list the registered models and their SAEs; `models add` imports one",
        description="List the model registry: the built-in demo worlds (demo, demo-small) and the "
        "entries of the registry TOML ($FEATUREEDIT_REGISTRY or $FEATUREEDIT_HOME/models.toml). "
        "`featureedit models add ID ...` imports a pretrained model and registers it.",
    )
    models.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    models.set_defaults(func=cmd_models, model_ids=[])

    # The other commands live in their own modules (torch-free at import).
    from editing import (
        cli_analysis,
        cli_attack,
        cli_bench,
        cli_engine,
        cli_facts,
        cli_models,
        cli_sae,
        cli_world,
    )

    cli_world.register(subparsers, common)  # world build, world info
    cli_models.register(models, common, cmd_models)  # models list (the default), models add
    cli_facts.register(subparsers, common)  # facts probe
    cli_sae.register(subparsers, common)  # sae train

    cli_engine.register(subparsers, common)  # erase, demo, apply-delta
    cli_bench.register(subparsers, common)  # bench
    cli_analysis.register(subparsers, common)  # analyze
    cli_attack.register(subparsers, common)  # attack


def register_plugins(subparsers: argparse._SubParsersAction) -> None:
    """Add commands from the ``featureedit.commands`` entry points (a broken one only warns)."""
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            ep.load()(subparsers)
        except Exception as exc:  # a broken plugin must not break the other commands
            print(
                f"featureedit: warning: command plugin {ep.name!r} ({ep.value}) not loaded: "
                f"{exc.__class__.__name__}: {exc}",
                file=sys.stderr,
            )


def build_parser() -> argparse.ArgumentParser:
    """The full ``featureedit`` parser: global options, built-in and plugin commands."""
    try:
        ver = version("featureedit")
    except PackageNotFoundError:  # running from a source tree that is not installed
        ver = "unknown"
    parser = argparse.ArgumentParser(
        prog="featureedit",
        description="Erase private facts from causal language models by editing the MLP weights "
        "that sparse-autoencoder features point to. Start with `featureedit world build --size "
        "small` (a minute on a CPU), then `featureedit world info --size small`.",
        epilog="Run `featureedit COMMAND --help` for a command's options. Global options may be "
        "given before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    _add_global_options(parser)
    parser.set_defaults(home=None, device=None, dtype=None, quiet=False, debug=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_commands(subparsers)
    register_plugins(subparsers)
    parser.set_defaults(func=help_command(parser))
    return parser


# --------------------------------------------------------------------------- main


def _settings_env(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """Export the global options as FEATUREEDIT_* variables while the command runs.

    Plugin commands and the processes they start then see the same settings as the library.
    """
    options = {
        "FEATUREEDIT_HOME": args.home,
        "FEATUREEDIT_DEVICE": args.device,
        "FEATUREEDIT_DTYPE": args.dtype,
    }
    return settings.exported({k: str(v) for k, v in options.items() if v is not None})


def _configure_logging(args: argparse.Namespace) -> None:
    # also silence Hugging Face's own bars ("Loading weights") before it is imported
    settings.hub_defaults(quiet=args.quiet)
    level = logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(format="featureedit: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("editing").setLevel(logging.DEBUG if args.debug else level)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _error_message(exc: Exception) -> str | None:
    """The one-line message of a user-facing error, or None for a bug."""
    if isinstance(exc, EditingError):
        return _one_line(exc)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        from editing.request import validation_summary  # never echoes the input (secrets)

        return f"invalid {exc.title}: {validation_summary(exc)}"
    if isinstance(exc, OSError):  # disk full, permission denied...: the environment, not a bug
        return _one_line(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``featureedit`` command line; return the exit code."""
    settings.hub_defaults()  # before any command imports transformers: never download
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    json_mode = bool(getattr(args, "json", False))
    token = _json_out.set(sys.stdout if json_mode else None)
    try:
        with _settings_env(args), contextlib.ExitStack() as stack:
            if json_mode:  # keep stdout for the one JSON document
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featureedit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _error_message(exc)
        if message is None:
            raise
        if args.debug:
            if isinstance(exc, EditingError | OSError):
                traceback.print_exc()
            else:  # a ValidationError's text quotes its input, which may be a secret
                traceback.print_tb(exc.__traceback__)
        elif not isinstance(exc, EditingError) and isinstance(exc, OSError):
            message += " (run with --debug for the traceback)"
        print(f"featureedit: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        _json_out.reset(token)


if __name__ == "__main__":
    sys.exit(main())
