"""What ``featureedit bench --service`` measures: :class:`ServiceBenchPlan`, the Locality set
sizes of its evaluation sweep, and the command line that reproduces a plan."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from editing.registry import EvalSize

# The Locality set of the evaluation-size sweep keeps the default set's mix: 60 % private facts,
# 40 % public, 2 prompts each (200 prompts = 60 + 40 facts x 2).
EVAL_PROMPTS_PER_FACT = 2
EVAL_PRIVATE_SHARE = 0.6
MAX_EVAL_PROMPTS = 20_000
PUBLISH_REPEATS = 3  # jobs per publish mode (a publish of demo-small takes well under 0.1 s)


@dataclass(frozen=True)
class ServiceBenchPlan:
    """What to measure."""

    model: str = "demo-small"
    methods: tuple[str, ...] = ("featureedit", "neurons")
    fact_counts: tuple[int, ...] = (1, 10, 100)
    eval_sizes: tuple[int, ...] = (50, 200, 400)  # Locality prompts; () skips the sweep
    publish_modes: tuple[str, ...] = ("full", "delta")  # () skips the publish comparison
    workers: tuple[int, ...] = (1,)  # the fact-count jobs run once per worker count
    chunk_facts: int | None = None  # the stack's FEATUREEDIT_CHUNK_FACTS (None: the default)
    throughput_jobs: int = 4
    job_timeout: float = 1800.0  # seconds a single job may take before the bench gives up
    seed: int = 0

    def env(self) -> dict[str, str]:
        """The stack's environment for this plan: requests of the largest fact count accepted
        (per request and per tenant in flight), and the chunk size when the plan sets one."""
        most = str(max((*self.fact_counts, 100)))
        env = {
            "FEATUREEDIT_MAX_FACTS": most,
            "FEATUREEDIT_TENANT_MAX_FACTS": str(max(500, int(most))),
        }
        if self.chunk_facts is not None:
            env["FEATUREEDIT_CHUNK_FACTS"] = str(self.chunk_facts)
        return env

    def capped(self, available: int) -> tuple[tuple[int, ...], list[str]]:
        """The fact counts a world of ``available`` private facts allows, and a note per count
        above it (it is measured at ``available`` facts instead: facts are never invented)."""
        counts = tuple(dict.fromkeys(min(n, available) for n in self.fact_counts))
        notes = [
            f"{n} facts asked for, but the {self.model} world has only {available} private facts: "
            f"measured at {available}"
            for n in self.fact_counts
            if n > available
        ]
        return counts, notes

    def check(self) -> None:
        """ValueError naming the bad option."""
        from editing.methods import method_names
        from editing.request import MAX_FACTS, PUBLISH_MODES

        bad = [m for m in self.methods if m not in method_names()]
        if bad or not self.methods:
            raise ValueError(f"--methods: unknown {bad}; choose from {method_names()}")
        if any(not 1 <= n <= MAX_FACTS for n in self.fact_counts):
            raise ValueError(f"--fact-counts: each count must be between 1 and {MAX_FACTS}")
        if any(not 2 <= n <= MAX_EVAL_PROMPTS for n in self.eval_sizes):
            raise ValueError(f"--eval-sizes: each size must be between 2 and {MAX_EVAL_PROMPTS}")
        bad_modes = [m for m in self.publish_modes if m not in PUBLISH_MODES]
        if bad_modes:
            raise ValueError(
                f"--publish-modes: unknown {bad_modes}; choose from {list(PUBLISH_MODES)}"
            )
        if not (self.fact_counts or self.eval_sizes or self.publish_modes):
            raise ValueError(
                "--fact-counts, --eval-sizes and --publish-modes are all none: nothing to measure"
            )
        if not self.workers or any(not 1 <= w <= 8 for w in self.workers):
            raise ValueError(f"--workers: each count must be between 1 and 8, got {self.workers}")
        if self.chunk_facts is not None and self.chunk_facts < 0:
            raise ValueError("--chunk-facts must be 0 (never split) or more")
        if not 0 <= self.throughput_jobs <= 100:
            raise ValueError("--throughput-jobs must be between 0 and 100")

    @classmethod
    def from_args(cls, args: Any) -> ServiceBenchPlan:
        """The plan of ``featureedit bench --service`` options (ValueError naming the flag)."""

        def names(text: str | None, default: str = "") -> tuple[str, ...]:
            text = default if text is None else text
            if text.strip().lower() == "none":
                return ()
            return tuple(m for m in (x.strip() for x in text.split(",")) if m)

        def counts(text: str, flag: str) -> tuple[int, ...]:
            try:
                return tuple(int(x) for x in names(text))
            except ValueError:
                raise ValueError(
                    f"{flag}: expected comma-separated integers, got {text!r}"
                ) from None

        methods = names(args.methods, "featureedit,neurons")
        plan = cls(
            model=args.model or "demo-small",
            methods=methods,
            fact_counts=counts(args.fact_counts, "--fact-counts"),
            eval_sizes=counts(args.eval_sizes, "--eval-sizes"),
            publish_modes=names(getattr(args, "publish_modes", None), "full,delta"),
            workers=counts(str(args.workers), "--workers"),
            chunk_facts=getattr(args, "chunk_facts", None),
            throughput_jobs=args.throughput_jobs,
        )
        plan.check()
        return plan


def eval_size_for(prompts: int) -> EvalSize:
    """The Locality set size of ``prompts`` prompts with the default set's mix (see above)."""
    from editing.registry import EvalSize

    facts = max(2, math.ceil(prompts / EVAL_PROMPTS_PER_FACT))
    private = min(facts - 1, max(1, round(facts * EVAL_PRIVATE_SHARE)))
    return EvalSize(private, facts - private, EVAL_PROMPTS_PER_FACT)


def eval_size_env(size: EvalSize) -> dict[str, str]:
    """The worker environment that makes ``size`` its operator setting (all models)."""
    return {f"FEATUREEDIT_WORKER_{k.upper()}": str(v) for k, v in size.to_dict().items()}


def _csv(values: Sequence[int | str]) -> str:
    return ",".join(map(str, values)) or "none"


def command_line(plan: ServiceBenchPlan) -> str:
    """The ``featureedit bench --service`` command line that reproduces ``plan``."""
    return (
        f"featureedit bench --service --model {plan.model} --methods {','.join(plan.methods)} "
        f"--fact-counts {_csv(plan.fact_counts)} --eval-sizes {_csv(plan.eval_sizes)} "
        f"--publish-modes {_csv(plan.publish_modes)} "
        f"--workers {_csv(plan.workers)} --throughput-jobs {plan.throughput_jobs}"
        + ("" if plan.chunk_facts is None else f" --chunk-facts {plan.chunk_facts}")
    )
