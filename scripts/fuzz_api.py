"""Schemathesis against a private API (its own Redis and home, no worker): no 5xx, as documented.

    python scripts/fuzz_api.py --examples 100 --timeout 1500

Starts a :class:`~ops.stack.LocalStack` API (``featureedit serve --no-worker`` on a free loopback
port; nothing runs the accepted erasures), creates an API key, runs
:func:`~ops.drills.fuzz.run_schemathesis` (every operation, every phase, authenticated) and prints
its summary as JSON; exit code 1 if it found a failure. docs/security.md ("Hostile input") records
a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ops.drills.fuzz import run_schemathesis
from ops.stack import LocalStack

# generous limits: the fuzzer should reach the handlers, not the rate limiter (429s still occur)
ENV = {
    "FEATUREEDIT_SSE_MAX_SECONDS": "1",
    "FEATUREEDIT_RATE_LIMIT_WRITE": "100000",
    "FEATUREEDIT_RATE_LIMIT_READ": "1000000",
    "FEATUREEDIT_TENANT_MAX_JOBS": "100000",
    "FEATUREEDIT_TENANT_MAX_FACTS": "10000000",
    "FEATUREEDIT_LOG_LEVEL": "WARNING",
}


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer once (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and phase")
    parser.add_argument("--timeout", type=float, default=1500, help="cap on the whole run, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="featureedit-fuzz-") as tmp,
        LocalStack(Path(tmp), env=ENV) as stack,
    ):
        stack.start_api()
        key = stack.create_key("fuzz")
        report = run_schemathesis(
            stack.base,
            key,
            max_examples=args.examples,
            seed=args.seed,
            timeout=args.timeout,
            report_dir=Path(tmp),
        )
    doc = {
        "passed": report.passed,
        "cases": report.generated,
        "operations": report.operations_tested,
        "seconds": round(report.seconds, 1),
        "summary": report.summary(),
    }
    print(json.dumps(doc, indent=2))
    if not report.passed:
        print(report.output_tail, file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
