"""The schemathesis drill: the whole OpenAPI of the running stack, fuzzed."""

from __future__ import annotations

from ops.drills.base import DrillContext, Observations, drill
from ops.drills.fuzz import EXCLUDED_CHECKS, run_schemathesis


@drill(
    "schemathesis",
    """Schemathesis (every operation of /openapi.json, every phase, bounded examples, with a
    valid API key) finds no 5xx and no response that breaks the documented status codes, content
    types, headers or body schemas.""",
)
def schemathesis_drill(ctx: DrillContext, obs: Observations) -> None:
    """Run schemathesis against the stack's API (``ctx.fuzz_examples`` cases per operation)."""
    report = run_schemathesis(
        ctx.s.base, ctx.key, max_examples=ctx.fuzz_examples, timeout=420, report_dir=ctx.s.root
    )
    obs.note(f"checks: all but {sorted(EXCLUDED_CHECKS)} (see docs/drills.md)")
    obs.check(report.operations_tested > 0, f"{report.operations_tested} operations tested")
    obs.check(report.passed, f"{report.summary()} in {report.seconds:.0f} s")
