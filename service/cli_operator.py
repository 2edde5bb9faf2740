"""Operator commands over the store (entry point ``featureedit.commands: operator``).

Run on a host that shares the service's home (keys) and store::

    featureedit private export ER_ID --out FILE   # the erasure's revert data (toxic: 0600)
    featureedit private subjects ER_ID            # the subject names kept for an erasure
    featureedit private delete ER_ID              # forget both (no rollback afterwards)
    featureedit checkpoints migrate [--dry-run]   # rewrite format-1 checkpoints (they held
                                                  # pre-edit values and subject names)

None of these is reachable over HTTP: the private record is the operator's alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from editing.cli import EXIT_OK, format_table, global_options, print_json
from editing.cli_input import add_command_group, add_json_option


def _settings(args: argparse.Namespace):  # -> service.config.Settings
    from service.config import Settings

    home = getattr(args, "home", None)
    return Settings(home=home) if home else Settings()  # else FEATUREEDIT_HOME, via Settings


def _store(settings):  # -> service.store.Store
    from service.store import get_store

    return get_store(settings)


def cmd_private_export(args: argparse.Namespace) -> int:
    """Write an erasure's revert data to FILE (mode 0600, sealed unless --plain)."""
    from editing import sealing
    from service.private_records import load_revert_bytes

    settings = _settings(args)
    data = load_revert_bytes(_store(settings), args.erasure_id, settings)
    if not args.plain:
        key = settings.secret_key.get_secret_value() if settings.secret_key else None
        data = sealing.seal(data, home=settings.home, key=key)
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new file (revert data is never overwritten)")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if args.json:
        print_json({"erasure_id": args.erasure_id, "out": str(out), "sealed": not args.plain})
    else:
        print(
            f"revert data of {args.erasure_id} -> {out} ({'plain' if args.plain else 'sealed'}); "
            "use it with `featureedit apply-delta EDITED CHECKPOINT OUT --revert --revert-data "
            f"{out}` and delete it afterwards"
        )
    return EXIT_OK


def cmd_private_subjects(args: argparse.Namespace) -> int:
    """Print the subject names kept for an erasure (personal data: the operator's eyes only)."""
    from service.private_records import load_subjects

    settings = _settings(args)
    subjects = load_subjects(_store(settings), args.erasure_id, settings)
    if args.json:
        print_json({"erasure_id": args.erasure_id, "subjects": subjects})
    else:
        print(
            format_table(["subject", "relation"], [[s["subject"], s["relation"]] for s in subjects])
        )
    return EXIT_OK


def cmd_private_delete(args: argparse.Namespace) -> int:
    """Forget an erasure's private data (its revert data and subject names)."""
    settings = _settings(args)
    _store(settings).delete_private(args.erasure_id)
    if args.json:
        print_json({"erasure_id": args.erasure_id, "deleted": True})
    else:
        print(f"private data of {args.erasure_id} deleted; it can no longer be rolled back")
    return EXIT_OK


def cmd_checkpoints_migrate(args: argparse.Namespace) -> int:
    """Rewrite the store's format-1 checkpoints into format 2 (see service.checkpoint_migration)."""
    from service.checkpoint_migration import migrate_store

    settings = _settings(args)
    bar = None
    if not getattr(args, "quiet", False) and not args.json:
        from tqdm.auto import tqdm

        bar = tqdm(desc="migrate", unit="checkpoint", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    rows = migrate_store(_store(settings), settings, dry_run=args.dry_run, progress=progress)
    if bar is not None:
        bar.close()
    if args.json:
        print_json({"dry_run": args.dry_run, "checkpoints": [r.to_dict() for r in rows]})
    else:
        table = [[r.checkpoint_id, r.status, r.new_id or "", r.detail or ""] for r in rows]
        print(format_table(["checkpoint", "status", "new id", "detail"], table))
    return 1 if any(r.status == "error" for r in rows) else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``private`` and ``checkpoints`` to the ``featureedit`` CLI."""
    common = global_options()
    sub = add_command_group(
        subparsers,
        "private",
        parents=[common],
        help="the operator's private erasure data (revert values, subject names)",
        description="Read or delete an erasure's private record: sealed with the service key, "
        "never served over HTTP.",
    )
    export = sub.add_parser("export", parents=[common], help="write the revert data to a file")
    export.add_argument("erasure_id")
    export.add_argument("--out", required=True, help="new file to write (mode 0600)")
    export.add_argument(
        "--plain", action="store_true", help="write it unsealed (a plain safetensors file)"
    )
    add_json_option(export)
    export.set_defaults(func=cmd_private_export)
    subjects = sub.add_parser("subjects", parents=[common], help="print the subject names")
    subjects.add_argument("erasure_id")
    add_json_option(subjects)
    subjects.set_defaults(func=cmd_private_subjects)
    delete = sub.add_parser("delete", parents=[common], help="forget the private data")
    delete.add_argument("erasure_id")
    add_json_option(delete)
    delete.set_defaults(func=cmd_private_delete)

    csub = add_command_group(
        subparsers,
        "checkpoints",
        parents=[common],
        help="operator tasks on the store's checkpoints",
    )
    migrate = csub.add_parser(
        "migrate",
        parents=[common],
        help="rewrite format-1 checkpoints (they held pre-edit values and subject names)",
    )
    migrate.add_argument("--dry-run", action="store_true", help="only list what would change")
    add_json_option(migrate)
    migrate.set_defaults(func=cmd_checkpoints_migrate)
