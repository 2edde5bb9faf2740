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
import math
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any, TextIO

from editing import settings
from editing.errors import EditingError

ENTRY_POINT_GROUP = "featureedit.commands"
EXIT_OK = 0
EXIT_ERROR = 2  # a user-facing error (also argparse's exit code for usage errors)
DTYPE_CHOICES = ("float32", "bfloat16", "float16")  # = editing.settings.DTYPES (torch-free here)
WORLD_SIZES_HELP = "small (seconds; model id demo-small) or default (minutes; model id demo)"

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


def _fields(pairs: Sequence[tuple[str, Any]], indent: str = "  ") -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in pairs)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _safetensors_parameters(path: Path) -> int | None:
    """Number of parameters stored in a safetensors file, read from its header (no torch)."""
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


# --------------------------------------------------------------------------- world commands

QUALITY_DESCRIPTIONS = {
    "recall_train": "private facts the model reproduces (greedy) on edit templates",
    "recall_heldout": "private facts it reproduces on held-out paraphrases",
    "recall_public_train": "public facts (locality controls) on edit templates",
    "recall_public_heldout": "public facts on held-out paraphrases",
    "perplexity_heldout_text": "perplexity on general text not trained on",
    "final_train_loss": "mean LM loss over the last 50 training steps",
    "fvu_max": "worst SAE fraction of variance unexplained",
    "l0_max": "largest SAE mean number of active latents",
}


def _demo_model_id(size: str) -> str | None:
    from editing.registry import DEMO_MODELS

    return next((mid for mid, s in DEMO_MODELS.items() if s == size), None)


def _world_doc(world: Any, size: str) -> dict[str, Any]:
    """The JSON description shared by ``world build`` and ``world info``."""
    from editing.adapters import hook_name

    saes = []
    for site in world.sites:
        for layer in range(world.n_layers):
            hook = hook_name(site, layer)
            q = world.quality.get("saes", {}).get(hook, {})
            saes.append(
                {
                    "site": site,
                    "layer": layer,
                    "hook": hook,
                    "dir": str(world.sae_dir(site, layer)),
                    "fvu": q.get("fvu"),
                    "l0": q.get("l0"),
                    "d_sae": q.get("d_sae"),
                }
            )
    return {
        "size": size,
        "model_id": _demo_model_id(size),
        "root": str(world.root),
        "model_dir": str(world.model_dir),
        "saes": saes,
        "quality": world.quality,
    }


def _print_world_summary(doc: Mapping[str, Any]) -> None:
    q = doc["quality"]
    print("\nQuality (fractions are of facts x prompts)")
    rows = [(k, q[k], QUALITY_DESCRIPTIONS[k]) for k in QUALITY_DESCRIPTIONS if k in q]
    print(format_table(["figure", "value", "meaning"], rows))
    train_by = q.get("recall_train_by_relation", {})
    held_by = q.get("recall_heldout_by_relation", {})
    if train_by:
        print("\nRecall of private facts by relation")
        rels = [r for r in train_by if r != "all"]
        print(
            format_table(
                ["relation", "recall_train", "recall_heldout"],
                [(r, train_by.get(r), held_by.get(r)) for r in rels],
            )
        )
    print("\nSAEs (sae-lens directories)")
    print(
        format_table(
            ["hook", "fvu", "l0", "d_sae", "dir"],
            [(s["hook"], s["fvu"], s["l0"], s["d_sae"], s["dir"]) for s in doc["saes"]],
        )
    )


def cmd_world_build(args: argparse.Namespace) -> int:
    """Build (or reuse) the demo world and print where it is and how good it is."""
    from editing.world.build import build_world, get_recipe, load_world, world_dir

    get_recipe(args.size)  # validate before anything slow
    root = world_dir(args.size, args.home)
    if args.force:
        before = None
        world = build_world(args.size, args.home, progress=not args.quiet)
    else:
        before = _manifest_identity(root)
        world = load_world(args.size, args.home, build=True, progress=not args.quiet)
    # reused only if the manifest that was there is still the one in place (a corrupt entry is
    # rebuilt into a new directory)
    cached = before is not None and before == _manifest_identity(root)
    doc = {"cached": cached, **_world_doc(world, args.size)}
    if args.json:
        print_json(doc)
        return EXIT_OK
    how = (
        "reused from the cache (pass --force to rebuild)"
        if cached
        else f"built in {world.quality.get('build_seconds', {}).get('total', '?')} s"
    )
    print(f"Demo world {args.size!r} (model id {doc['model_id']}) {how}")
    print(_fields([("directory", doc["root"]), ("model", doc["model_dir"])]))
    _print_world_summary(doc)
    print(f"\nNext: `featureedit world info --size {args.size}` lists its facts and prompts.")
    return EXIT_OK


def _manifest_identity(root: Path) -> tuple[int, int] | None:
    try:
        st = (root / "MANIFEST.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def cmd_world_info(args: argparse.Namespace) -> int:
    """Print a built world's paths, sizes, quality and facts (never builds)."""
    from editing.relations import RELATIONS, get_relation
    from editing.world.build import load_world

    relation = get_relation(args.relation).name if args.relation else None
    world = load_world(args.size, args.home, build=False, progress=False)
    facts = [f for f in world.facts if relation is None or f.relation == relation]
    model_file = world.model_dir / "model.safetensors"
    doc = _world_doc(world, args.size)
    doc["sizes"] = {
        "total_bytes": _dir_bytes(world.root),
        "model_bytes": _dir_bytes(world.model_dir),
        "saes_bytes": _dir_bytes(world.root / "saes"),
        "model_parameters": _safetensors_parameters(model_file),
    }
    doc["recipe"] = world.recipe
    doc["counts"] = {
        "people": len(world.people),
        "facts": len(world.facts),
        "private_facts": len(world.private_facts()),
    }
    doc["relations"] = {
        name: {
            "description": rel.description,
            "private": rel.private,
            "edit_templates": list(rel.edit_templates),
            "heldout_templates": list(rel.heldout_templates),
        }
        for name, rel in RELATIONS.items()
        if relation is None or name == relation
    }
    doc["facts"] = [
        {
            "fact_id": f.fact_id,
            "subject": f.subject,
            "relation": f.relation,
            "private": f.private,
            "target": f.target,
            "edit_prompts": RELATIONS[f.relation].edit_prompts(f.subject),
            "heldout_prompts": RELATIONS[f.relation].heldout_prompts(f.subject),
        }
        for f in facts
    ]
    if args.json:
        print_json(doc)
        return EXIT_OK
    sizes, counts = doc["sizes"], doc["counts"]
    params = sizes["model_parameters"]
    print(f"Demo world {args.size!r} (model id {doc['model_id']}); targets are fictional")
    print(
        _fields(
            [
                ("directory", f"{doc['root']}  ({_human_bytes(sizes['total_bytes'])})"),
                (
                    "model",
                    f"{doc['model_dir']}  ({_human_bytes(sizes['model_bytes'])}"
                    + (f", {params:,} parameters)" if params else ")"),
                ),
                ("SAEs", f"{world.root / 'saes'}  ({_human_bytes(sizes['saes_bytes'])})"),
                (
                    "facts",
                    f"{counts['facts']} about {counts['people']} people "
                    f"({counts['private_facts']} private)",
                ),
            ]
        )
    )
    _print_world_summary(doc)
    print("\nPrompt templates ({subject} is filled in; held-out ones are never used to edit)")
    rows = []
    for name, rel in doc["relations"].items():
        kind = "private" if rel["private"] else "public"
        rows += [(name, kind, "edit", t) for t in rel["edit_templates"]]
        rows += [(name, kind, "held-out", t) for t in rel["heldout_templates"]]
    print(format_table(["relation", "kind", "split", "template"], rows))
    print("\nFacts")
    print(
        format_table(
            ["subject", "relation", "private", "target"],
            [
                (f["subject"], f["relation"], "yes" if f["private"] else "no", f["target"])
                for f in doc["facts"]
            ],
        )
    )
    return EXIT_OK


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
    """Add the built-in commands: ``world build``, ``world info``, ``models`` and the engine's
    (``erase``, ``demo``, ``apply-delta``, ``bench``: :mod:`editing.cli_engine`) and the
    analyses' (``analyze``: :mod:`editing.cli_analysis`)."""
    common = global_options()

    world = subparsers.add_parser(
        "world",
        help="build or inspect the demo world (a small trained LM with private facts and SAEs)",
        description="The demo world: a synthetic corpus of fictional people with private facts, "
        "a Gemma-2-architecture model trained on it and sparse autoencoders trained on its "
        "activations. It is cached under $FEATUREEDIT_HOME/worlds/.",
    )
    world_sub = world.add_subparsers(dest="world_command", metavar="COMMAND")
    world.set_defaults(func=_help_of(world))

    build = world_sub.add_parser(
        "build",
        parents=[common],
        help="build the demo world (reuses a valid cached one) and print its quality",
        description="Build the demo world, or reuse the cached one if its checksums match "
        "(a corrupt cache entry is rebuilt). Prints the model and SAE directories and the "
        "quality figures.",
    )
    build.add_argument("--size", default="default", help=f"world size: {WORLD_SIZES_HELP}")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    build.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    build.set_defaults(func=cmd_world_build)

    info = world_sub.add_parser(
        "info",
        parents=[common],
        help="show a built world's paths, sizes, quality, prompts and facts",
        description="Show a built demo world: directories and sizes, quality figures, the prompt "
        "templates of each relation and every fact (subject, relation, target). The targets "
        "are fictional. Does not build: run `featureedit world build` first.",
    )
    info.add_argument("--size", default="default", help=f"world size: {WORLD_SIZES_HELP}")
    info.add_argument("--relation", help="only this relation (e.g. phone, email, address)")
    info.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    info.set_defaults(func=cmd_world_info)

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

    # Engine and analysis commands live in their own modules (torch-free at import).
    from editing import cli_analysis, cli_engine, cli_facts, cli_models

    cli_models.register(models, common, cmd_models)  # models list (the default), models add
    cli_facts.register(subparsers, common)  # facts probe

    cli_engine.register(subparsers, common)  # erase, demo, apply-delta, bench
    cli_analysis.register(subparsers, common)  # analyze


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


def _help_of(parser: argparse.ArgumentParser) -> Command:
    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_ERROR

    return show_help


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
    parser.set_defaults(func=_help_of(parser))
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
