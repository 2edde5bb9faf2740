"""Service commands of the ``featureedit`` CLI (entry point ``featureedit.commands: service``).

Server side (on the API host, reading ``$FEATUREEDIT_HOME/keys``)::

    featureedit keys create --tenant acme     # prints the key once, on the last line
    featureedit keys list
    featureedit keys revoke KEY_ID

Client side (``--url`` / ``FEATUREEDIT_URL``, ``--api-key`` / ``FEATUREEDIT_API_KEY``)::

    featureedit submit request.json           # or flags like `featureedit erase`; prints the id
    featureedit status ER_ID [--wait]
    featureedit cancel ER_ID
    featureedit download CHECKPOINT_ID DEST
    featureedit report ER_ID --format pdf --out report.pdf   # the compliance report

``serve`` (uvicorn + worker) is registered by ``workers.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editing import cli_input
from editing.cli import EXIT_ERROR, EXIT_OK, format_table, global_options, print_json
from editing.errors import ConfigError
from editing.methods import method_names

DEFAULT_URL = "http://127.0.0.1:8000"


def _fail(message: str) -> int:
    print(f"featureedit: error: {message}", file=sys.stderr)
    return EXIT_ERROR


# ----------------------------------------------------------------------------- keys
def _home(args: argparse.Namespace) -> str | None:
    """``--home``; None leaves the choice to the settings (``FEATUREEDIT_HOME`` or the default)."""
    return getattr(args, "home", None)


def _audit_key_action(
    args: argparse.Namespace, action: str, tenant: str, key_id: str | None
) -> None:
    from service.audit import AuditLog
    from service.config import Settings

    home = _home(args)
    settings = Settings(home=home) if home else Settings()
    AuditLog(settings.audit_path).record(
        action, tenant=tenant, outcome="ok", key_id=key_id, reason="cli"
    )


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create an API key for a tenant; the key itself is printed once, on the last line."""
    from service.security import create_key

    try:
        key_id, key = create_key(args.tenant, _home(args))
    except ValueError as exc:
        return _fail(str(exc))
    _audit_key_action(args, "key_create", args.tenant, key_id)
    if args.json:
        print_json({"key_id": key_id, "tenant": args.tenant, "key": key})
        return EXIT_OK
    print(f"Created API key {key_id} for tenant {args.tenant!r}. It is shown only now; store it")
    print("securely (clients send it as 'Authorization: Bearer <key>'):")
    print(key)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    """List API keys (ids, tenants, dates; never the keys)."""
    from service.security import list_keys

    keys = [k.public_dict() for k in list_keys(_home(args))]
    if args.tenant:
        keys = [k for k in keys if k["tenant"] == args.tenant]
    if args.json:
        print_json({"keys": keys})
        return EXIT_OK
    if not keys:
        print("No API keys. Create one with `featureedit keys create --tenant NAME`.")
        return EXIT_OK
    rows = [(k["key_id"], k["tenant"], k["created_at"], k["revoked_at"] or "active") for k in keys]
    print(format_table(["key_id", "tenant", "created", "revoked"], rows))
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Revoke an API key by id (takes effect on the next request)."""
    from service.security import revoke

    try:
        info = revoke(args.key_id, _home(args))
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    _audit_key_action(args, "key_revoke", info.tenant, info.key_id)
    if args.json:
        print_json(info.public_dict())
    else:
        print(f"Revoked {info.key_id} (tenant {info.tenant!r}) at {info.revoked_at}.")
    return EXIT_OK


def cmd_keys_callback_secret(args: argparse.Namespace) -> int:
    """Print a tenant's callback signing secret (give it to that tenant only)."""
    from service.config import Settings
    from service.security.signing import settings_tenant_secret
    from service.store import valid_tenant

    if not valid_tenant(args.tenant):
        return _fail(f"invalid tenant name {args.tenant!r}")
    home = _home(args)
    settings = Settings(home=home) if home else Settings()
    secret = settings_tenant_secret(settings, args.tenant)
    _audit_key_action(args, "callback_secret_show", args.tenant, None)
    if args.json:
        print_json({"tenant": args.tenant, "callback_secret": secret})
        return EXIT_OK
    print(f"Callback signing secret of tenant {args.tenant!r} (verify X-Featureedit-Signature")
    print("with it; see docs/security.md). Give it to this tenant only:")
    print(secret)
    return EXIT_OK


# ----------------------------------------------------------------------------- client verbs
def _client(args: argparse.Namespace) -> Any:
    from service.client import FeatureeditClient
    from service.config import ClientSettings

    env = ClientSettings()
    key = args.api_key or (env.api_key.get_secret_value() if env.api_key else None)
    if not key:
        raise _UsageError("no API key: pass --api-key or set FEATUREEDIT_API_KEY")
    return FeatureeditClient(args.url or env.url or DEFAULT_URL, key)


class _UsageError(Exception):
    pass


def _client_command(func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Turn client and usage errors into one line on stderr and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        from service.client import APIError

        try:
            return func(args)
        except (APIError, _UsageError, ConfigError) as exc:
            return _fail(str(exc))
        except TimeoutError as exc:
            return _fail(str(exc))

    run.__doc__ = func.__doc__
    return run


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request body from ``FILE`` (a full request, ``{"facts": [...]}``, a list or JSONL)
    and the flags (which override the file's model, method, params and thresholds)."""
    body, facts = cli_input.read_fact_file(Path(args.file), args.file) if args.file else ({}, [])
    fact = cli_input.fact_from_options(args)
    if fact is not None:
        facts.append(fact)
    if not facts:
        raise _UsageError("no fact given: pass a request FILE or --subject/--relation/--target")
    body["facts"] = facts
    for name in ("model", "method", "base_checkpoint", "publish", "callback_url"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.param:
        body["params"] = {**body.get("params", {}), **cli_input.parse_pairs(args.param, "--param")}
    if args.threshold:
        body["thresholds"] = {
            **body.get("thresholds", {}),
            **cli_input.parse_pairs(args.threshold, "--threshold"),
        }
    return body


def _print_record(record: dict[str, Any]) -> None:
    fields = [
        ("id", record["id"]),
        ("status", record["status"]),
        ("stage", record.get("stage") or "-"),
        ("progress", f"{100 * (record.get('progress') or 0):.0f}%"),
        ("model", record["model"]),
        ("method", record["method"]),
        ("facts", len(record.get("facts", []))),
        ("checkpoint", record.get("checkpoint_id") or "-"),
        ("updated", record["updated_at"]),
    ]
    if record.get("error"):
        fields.append(("error", record["error"]))
    if record.get("cancel_requested"):
        fields.append(("cancel", "requested"))
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    metrics = record.get("metrics") or {}
    if metrics:
        keys = ("reliability", "generalization", "locality", "delta_ppl")
        rows = []
        for k in keys:
            v = metrics.get(k)
            rows.append((k, v.get("value") if isinstance(v, dict) else v))
        print()
        print(format_table(["metric", "value"], rows))
    acceptance = record.get("acceptance") or {}
    for reason in acceptance.get("reasons", []):
        print(f"  not accepted: {reason}")


@_client_command
def cmd_submit(args: argparse.Namespace) -> int:
    """Submit an erasure request to the service; print its id."""
    body = build_request(args)
    with _client(args) as client:
        accepted = client.submit(body, idempotency_key=args.idempotency_key)
        if args.wait:
            record = client.wait(accepted["id"], timeout=args.timeout)
            if args.json:
                print_json(record)
            else:
                _print_record(record)
            return EXIT_OK if record["status"] in ("succeeded", "nothing_to_erase") else 1
    if args.json:
        print_json(accepted)
    else:
        print(accepted["id"])
    return EXIT_OK


@_client_command
def cmd_status(args: argparse.Namespace) -> int:
    """Show an erasure (optionally waiting until it ends)."""
    with _client(args) as client:
        if args.wait:
            record = client.wait(args.erasure_id, timeout=args.timeout)
        else:
            record = client.get(args.erasure_id)
    if args.json:
        print_json(record)
    else:
        _print_record(record)
    return EXIT_OK


@_client_command
def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel an erasure."""
    with _client(args) as client:
        record = client.cancel(args.erasure_id)
    if args.json:
        print_json(record)
    elif record["status"] == "cancelled":
        print(f"Cancelled {record['id']}.")
    else:
        print(f"Cancellation of {record['id']} requested; it stops at the next checkpoint.")
    return EXIT_OK


@_client_command
def cmd_download(args: argparse.Namespace) -> int:
    """Download a published checkpoint (resumable; every file checked against the manifest)."""
    with _client(args) as client:
        dest = client.download_checkpoint(args.checkpoint_id, args.dest, resume=not args.restart)
    if args.json:
        print_json({"checkpoint_id": args.checkpoint_id, "dir": str(dest)})
    else:
        print(f"Checkpoint {args.checkpoint_id} downloaded and verified in {dest}")
    return EXIT_OK


@_client_command
def cmd_report(args: argparse.Namespace) -> int:
    """Fetch an erasure's compliance report (JSON, HTML or PDF) to a file or stdout."""
    with _client(args) as client:
        report = client.report(args.erasure_id, format=args.format)
    if isinstance(report, dict):
        data = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
    elif isinstance(report, str):
        data = report.encode("utf-8")
    else:
        data = report
    if args.out in (None, "-"):
        if args.format == "pdf" and sys.stdout.isatty():
            return _fail("a PDF is binary: write it to a file with --out FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    out = Path(args.out)
    if not out.parent.is_dir():
        return _fail(f"--out {args.out}: directory {out.parent} does not exist; create it first")
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_bytes(data)
    tmp.replace(out)
    print(f"Report of {args.erasure_id} ({args.format}, {len(data)} bytes) written to {out}")
    return EXIT_OK


# ----------------------------------------------------------------------------- registration
def _client_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("service options")
    group.add_argument(
        "--url", help=f"service base URL (env FEATUREEDIT_URL; default {DEFAULT_URL})"
    )
    group.add_argument("--api-key", help="API key (env FEATUREEDIT_API_KEY; prefer the env)")
    cli_input.add_json_option(group)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``keys``, ``submit``, ``status``, ``cancel``, ``download`` and ``report``."""
    common = global_options()
    client = _client_options()

    keys_sub = cli_input.add_command_group(
        subparsers,
        "keys",
        help="manage the service's API keys (on the API host)",
        description="API keys of the HTTP service, stored as sha256 hashes in "
        "$FEATUREEDIT_HOME/keys/api_keys.json.",
    )

    create = keys_sub.add_parser(
        "create", parents=[common], help="create a key for a tenant (printed once)"
    )
    create.add_argument("--tenant", required=True, help="tenant name (letters, digits, ._-)")
    cli_input.add_json_option(create)
    create.set_defaults(func=cmd_keys_create)

    listing = keys_sub.add_parser("list", parents=[common], help="list keys (never the keys)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    cli_input.add_json_option(listing)
    listing.set_defaults(func=cmd_keys_list)

    revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key by id")
    revoke.add_argument("key_id", metavar="KEY_ID")
    cli_input.add_json_option(revoke)
    revoke.set_defaults(func=cmd_keys_revoke)

    shown = keys_sub.add_parser(
        "callback-secret",
        parents=[common],
        help="show a tenant's callback signing secret",
        description="Print the secret a tenant verifies its callbacks with (HMAC-SHA256 over "
        "timestamp, delivery id and body; derived per tenant from the service's callback key, "
        "never stored). Each tenant's differs; see docs/security.md.",
    )
    shown.add_argument("--tenant", required=True, help="tenant name")
    cli_input.add_json_option(shown)
    shown.set_defaults(func=cmd_keys_callback_secret)

    submit = subparsers.add_parser(
        "submit",
        parents=[common, client],
        help="submit an erasure request to the service",
        description="Submit an erasure request: FILE holds a request body (JSON with 'facts'), "
        "a fact, a list of facts or JSONL; flags add a fact or override fields. Prints the "
        "erasure id.",
    )
    submit.add_argument("file", nargs="?", metavar="FILE", help="request JSON (or JSONL facts)")
    submit.add_argument("--model", help="registered model id (default demo)")
    submit.add_argument("--method", choices=method_names())
    cli_input.add_fact_options(submit)
    cli_input.add_method_options(submit)
    submit.add_argument(
        "--publish",
        choices=("full", "delta"),
        help="publish the edited model and its delta (full) or the delta alone (delta); "
        "default: the service's setting",
    )
    submit.add_argument("--callback-url", help="URL POSTed the final record")
    submit.add_argument("--idempotency-key", help="retry-safe key (default: random)")
    submit.add_argument("--wait", action="store_true", help="wait for the result and show it")
    submit.add_argument("--timeout", type=float, default=3600, help="--wait limit, seconds")
    submit.set_defaults(func=cmd_submit)

    status = subparsers.add_parser(
        "status", parents=[common, client], help="show an erasure submitted to the service"
    )
    status.add_argument("erasure_id", metavar="ID")
    status.add_argument("--wait", action="store_true", help="wait until it ends")
    status.add_argument("--timeout", type=float, default=3600, help="--wait limit, seconds")
    status.set_defaults(func=cmd_status)

    cancel = subparsers.add_parser(
        "cancel", parents=[common, client], help="cancel an erasure submitted to the service"
    )
    cancel.add_argument("erasure_id", metavar="ID")
    cancel.set_defaults(func=cmd_cancel)

    download = subparsers.add_parser(
        "download",
        parents=[common, client],
        help="download a published checkpoint from the service (resumable, verified)",
    )
    download.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    download.add_argument("dest", metavar="DEST", help="directory to write the files into")
    download.add_argument("--restart", action="store_true", help="ignore partial downloads")
    download.set_defaults(func=cmd_download)

    report = subparsers.add_parser(
        "report",
        parents=[common, client],
        help="fetch an erasure's compliance report (json, html or pdf)",
        description="Fetch the compliance report of an erasure: acceptance with thresholds vs "
        "measured values, metrics before and after, located units, the edit's footprint, "
        "lineage and file hashes. Never contains a secret (keyed fingerprints only).",
    )
    report.add_argument("erasure_id", metavar="ID")
    report.add_argument("--format", choices=("json", "html", "pdf"), default="html")
    report.add_argument("--out", metavar="FILE", help="write it to FILE (default: stdout)")
    report.set_defaults(func=cmd_report)
