"""Operator commands on a private loopback stack: ``featureedit load`` and ``bench --service``.

Each starts its own stack (:mod:`ops.stack`) that reuses the demo worlds of the caller's home;
:func:`add_stack_command` and :func:`source_home` are shared with ``featureedit drill``
(:mod:`ops.drills.cli`).

``featureedit load [--polls 2000] [--submissions 200] [--duration 60] [--json]``
    The bounded load test of :mod:`ops.loadtest` on a private loopback stack (own Redis, API,
    one busy worker). Exit code 1 when the status polls' p99 is over ``--max-poll-p99-ms``
    (default 100) or any request got a 5xx or no answer.

``featureedit bench --service [--json | --markdown]``
    The service benchmark of :mod:`ops.bench_service`, added to the engine's ``bench``
    command through the entry-point group ``featureedit.bench`` (see
    :func:`editing.cli_bench.register`), so ``editing`` never imports this package.

Entry points (``pyproject.toml``): ``featureedit.commands: perf = ops.cli:register`` and
``featureedit.bench: service = ops.cli:register_bench``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editing import settings
from editing.cli import EXIT_ERROR, EXIT_OK, Command, format_table, global_options, print_json

DEFAULT_MAX_POLL_P99_MS = 100.0


# ----------------------------------------------------------------------------- shared
def source_home(args: argparse.Namespace) -> Path:
    """The featureedit home whose demo worlds a private stack reuses (``--home`` or the env)."""
    return settings.home(getattr(args, "home", None), create=False)


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


def stack_root(args: argparse.Namespace) -> tuple[Path, bool]:
    """``(directory for the private stack, whether to remove it afterwards)``."""
    keep = getattr(args, "keep", None)
    if keep:
        path = Path(keep).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="featureedit-stack-")), True


def _say(args: argparse.Namespace) -> Any:
    def say(message: str) -> None:
        if not getattr(args, "quiet", False):
            print(f"featureedit: {message}", file=sys.stderr, flush=True)

    return say


# ----------------------------------------------------------------------------- load
def load_table(report: dict[str, Any]) -> str:
    """The load report as a text table (latency in ms, outcome counts)."""
    rows = []
    for name in ("polls", "submissions"):
        part = report[name]
        lat, out = part["latency"], part["outcomes"]
        rows.append(
            [
                name,
                sum(out.values()),
                lat["p50_ms"],
                lat["p95_ms"],
                lat["p99_ms"],
                lat["max_ms"],
                out["ok"],
                out["rate_limited"],
                out["client_error"],
                out["server_error"],
                out["transport_error"],
            ]
        )
    headers = ["kind", "sent", "p50 ms", "p95 ms", "p99 ms", "max ms", "2xx", "429", "4xx"]
    return format_table([*headers, "5xx", "no answer"], rows)


def load_verdict(report: dict[str, Any], max_poll_p99_ms: float) -> list[str]:
    """Why the load test failed its bar (empty when it passed)."""
    problems = []
    p99 = report["polls"]["latency"]["p99_ms"]
    if p99 is not None and p99 >= max_poll_p99_ms:
        problems.append(f"status polls p99 {p99} ms >= {max_poll_p99_ms:g} ms")
    if report["errors_5xx"]:
        problems.append(f"{report['errors_5xx']} responses were 5xx")
    lost = sum(report[n]["outcomes"]["transport_error"] for n in ("polls", "submissions"))
    if lost:
        problems.append(f"{lost} requests got no answer (timeout or connection error)")
    return problems


def cmd_load(args: argparse.Namespace) -> int:
    """Run the bounded load test on a private stack; print the table (or JSON)."""
    from ops.loadtest import LoadPlan, LoadSetup, run_load_test

    plan = LoadPlan(
        polls=args.polls,
        submissions=args.submissions,
        duration=args.duration,
        concurrency=args.concurrency,
        timeout=args.timeout,
        seed=args.seed,
    )
    try:
        plan.check()
    except ValueError as exc:
        print(f"featureedit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    root, remove = stack_root(args)
    setup = LoadSetup(
        source_home=source_home(args), root=root, model=args.model, tenants=args.tenants
    )
    try:
        report = run_load_test(plan, setup, progress=_say(args))
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)
    problems = load_verdict(report, args.max_poll_p99_ms)
    report["passed"] = not problems
    report["problems"] = problems
    if args.json:
        print_json(report)
    else:
        print(load_table(report))
        print(
            f"\nworker busy {report['worker_busy_share']:.0%} of the {report['wall_seconds']} s "
            f"window; {report['accepted_submissions']} submissions accepted"
        )
        print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return EXIT_OK if not problems else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``featureedit load``."""
    p = add_stack_command(
        subparsers,
        "load",
        func=cmd_load,
        help="bounded load test of the API on a private loopback stack with a busy worker",
        description="Start a private stack on loopback (own Redis, API, one worker), keep the "
        "worker busy with real erasures, send a bounded number of status polls and submissions "
        "spread over --duration seconds from --concurrency clients, and print p50/p95/p99 "
        "latency and outcome counts (429s apart). Exit code 1 if the polls' p99 is over "
        "--max-poll-p99-ms or any request got a 5xx or no answer.",
    )
    p.add_argument("--polls", type=int, default=2000, help="status polls to send (2000)")
    p.add_argument("--submissions", type=int, default=200, help="submissions to send (200)")
    p.add_argument("--duration", type=float, default=60.0, help="spread over this many s (60)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    p.add_argument("--tenants", type=int, default=4, help="spread over this many tenants (4)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s (10)")
    p.add_argument("--model", default="demo-small", help="demo model the jobs use (demo-small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-poll-p99-ms",
        type=float,
        default=DEFAULT_MAX_POLL_P99_MS,
        help="the bar for the status polls' p99 (100)",
    )
    p.add_argument("--keep", metavar="DIR", help="put the stack (logs, store) in DIR and keep it")


# ----------------------------------------------------------------------------- bench --service
def register_bench(parser: argparse.ArgumentParser) -> Command:
    """Add ``--service`` and its options to ``featureedit bench``; return its command."""
    group = parser.add_argument_group("service benchmark (--service)")
    group.add_argument(
        "--service",
        action="store_true",
        help="benchmark erasure jobs end to end through the real API and RQ workers on a "
        "private loopback stack (model default demo-small)",
    )
    group.add_argument(
        "--fact-counts",
        default="1,10,100",
        metavar="N,N,...",
        help="facts per request to measure (1,10,100; none skips them, and with "
        "--throughput-jobs 0 also the cold job on the default-setting workers)",
    )
    group.add_argument(
        "--eval-sizes",
        default="50,200,400",
        metavar="N,N,...",
        help="Locality set sizes in prompts to measure 1-fact jobs at, each on a fresh worker "
        "given the size as its operator setting (50,200,400; the service's default set is 200; "
        "none skips the sweep)",
    )
    group.add_argument(
        "--publish-modes",
        default="full,delta",
        metavar="MODE,...",
        help="publish modes to compare with 1-fact FeatureEdit jobs (full,delta; none skips)",
    )
    group.add_argument(
        "--workers",
        default="1",
        metavar="N,N,...",
        help="worker processes; the fact-count jobs run once per count given (1; e.g. 1,2)",
    )
    group.add_argument(
        "--chunk-facts",
        type=int,
        default=None,
        metavar="N",
        help="the stack's FEATUREEDIT_CHUNK_FACTS: requests of more facts are split into chunks "
        "run by the workers in parallel (default: the service's, 100; 0 never splits)",
    )
    group.add_argument(
        "--plot",
        metavar="FILE",
        help="write a log-log PNG of seconds vs facts (per method and worker count) to FILE",
    )
    group.add_argument(
        "--throughput-jobs",
        type=int,
        default=4,
        help="1-fact jobs submitted at once to measure throughput (4; 0 skips)",
    )
    group.add_argument("--keep", metavar="DIR", help="put the stack in DIR and keep it")
    return cmd_bench_service


def cmd_bench_service(args: argparse.Namespace) -> int:
    """Run the service benchmark on a private stack; print a table, JSON or Markdown."""
    from ops.bench_service.plan import ServiceBenchPlan
    from ops.bench_service.run import run_bench_service
    from ops.bench_service.tables import bench_service_markdown, bench_service_table

    try:
        plan = ServiceBenchPlan.from_args(args)
    except ValueError as exc:
        print(f"featureedit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    root, remove = stack_root(args)
    try:
        result = run_bench_service(plan, source_home(args), root, progress=_say(args))
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)
    if args.plot:
        from ops.bench_service.plot import plot_growth

        plot_growth(result, args.plot)
    if args.json:
        print_json(result)
    elif args.markdown:
        print(bench_service_markdown(result))
    else:
        print(bench_service_table(result))
    return EXIT_OK
