"""Worker tuning: heartbeats, maintenance periods, model cache size, cancellation polling.

Every field can be set by ``FEATUREEDIT_WORKER_<FIELD>`` (upper case), e.g.
``FEATUREEDIT_WORKER_HEARTBEAT_TTL=30``. The service-wide settings (Redis URL, store, job timeout,
queue names, keys) stay in :class:`service.config.Settings`.

How long a SIGKILLed worker's job stays "running" before it is retried (or failed)::

    heartbeat_ttl           the job's StartedJobRegistry entry expires this long after the
                            last heartbeat (a heartbeat is sent every heartbeat_interval)
  + cleanup_interval        some live worker's maintenance thread notices the expired entry and
                            retries the job (Retry) or fails it (AbandonedJobError)
  + retry interval          rq's Retry(interval=...) delay (Settings.job_retry_intervals)
  + scheduler_interval      a maintenance thread moves the due job back onto its queue
  = the bound (defaults: 30 + 15 + 5 + 5 = 55 s), plus the wait for a free worker.

The size of the Locality set that decides acceptance is an operator setting: per model in the
registry (``[models.<id>.evaluation]``, :class:`editing.registry.EvalSize`), overridden for every
model this worker serves by ``FEATUREEDIT_WORKER_LOCALITY_PRIVATE_FACTS``, ``..._PUBLIC_FACTS`` and
``..._PROMPTS_PER_FACT`` (each optional; unset keys keep the registry's value). Requests cannot
set it.

The attack suite run on every edit before the publish decision (issue #13) is an operator setting
too: ``FEATUREEDIT_WORKER_ATTACKS`` (comma-separated attack names; empty: none; default the cheap
``sampled,logit_lens``), ``FEATUREEDIT_WORKER_ATTACK_BUDGETS`` (``ATTACK.KEY=NUMBER`` pairs,
comma-separated; default ``sampled.samples=20``) and ``FEATUREEDIT_WORKER_ATTACK_LIMITS`` (default
limits, ``KEY=NUMBER`` pairs; default :data:`editing.acceptance.DEFAULT_ATTACK_LIMITS`: a
checkpoint publishes only if no fact's secret comes out in more than 1 % of its sampled
continuations and no layer's logit lens ranks a secret token first; empty: off). A request's own
limit (its thresholds) wins over the default. ``featureedit erase`` uses the same defaults.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from editing.acceptance import DEFAULT_ATTACK_BUDGETS, DEFAULT_ATTACK_LIMITS, DEFAULT_ATTACKS

if TYPE_CHECKING:
    from editing.attack_gate import AttackPlan
    from editing.registry import EvalSize, ModelEntry

CALLBACK_QUEUE_SUFFIX = "callbacks"
DEFAULT_API_PORT = 8000


class WorkerSettings(BaseSettings):
    """Tuning of one worker process (see the module docstring for the recovery bound)."""

    model_config = SettingsConfigDict(env_prefix="FEATUREEDIT_WORKER_", extra="ignore")

    heartbeat_ttl: int = Field(
        default=30, ge=3, description="Seconds a running job's registry entry lives unrefreshed."
    )
    heartbeat_interval: float = Field(
        default=10.0, gt=0, description="Seconds between heartbeats while a job runs."
    )
    cleanup_interval: float = Field(
        default=15.0, gt=0, description="Seconds between StartedJobRegistry cleanups."
    )
    scheduler_interval: float = Field(
        default=5.0, gt=0, description="Seconds between moves of due retries onto their queue."
    )
    cache_size: int = Field(default=1, ge=1, description="Models kept loaded (LRU).")
    cancel_poll_interval: float = Field(
        default=0.5, ge=0, description="Seconds between reads of the record's cancel flag."
    )
    callback_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Overall deadline of one callback delivery (connect, TLS, send, reply), "
        "seconds: not per read, so a trickling endpoint is cut when it passes.",
    )
    callback_max_reply_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="Bytes of a callback endpoint's reply body read at most; the rest is dropped.",
    )
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Lower the worker's CPU priority by this much (POSIX nice; 0 keeps it): on a "
        "host shared with the API, model work yields to requests (see `featureedit load`).",
    )
    locality_private_facts: int | None = Field(
        default=None,
        ge=1,
        description="Override of the registry's Locality set size: private facts of other "
        "subjects (registry default 60).",
    )
    locality_public_facts: int | None = Field(
        default=None,
        ge=1,
        description="Override: public facts of other subjects in the Locality set (default 40).",
    )
    locality_prompts_per_fact: int | None = Field(
        default=None,
        ge=1,
        description="Override: prompts per Locality fact (default 2).",
    )

    attacks: str = Field(
        default=DEFAULT_ATTACKS,
        description="Attacks run on every edit before the publish decision (comma-separated "
        "names from `featureedit attack`; empty: none).",
    )
    attack_budgets: str = Field(
        default=DEFAULT_ATTACK_BUDGETS,
        description="Their budgets, ATTACK.KEY=NUMBER pairs, comma-separated.",
    )
    attack_limits: str = Field(
        default=DEFAULT_ATTACK_LIMITS,
        description="Default attack limits (threshold KEY=NUMBER pairs, comma-separated); a "
        "request's own limit wins. Empty: off.",
    )

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        if self.heartbeat_interval * 2 >= self.heartbeat_ttl:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval} s) must be less than half of "
                f"heartbeat_ttl ({self.heartbeat_ttl} s), or a busy worker's job looks abandoned"
            )
        self.attack_plan()  # a bad attack setting fails at start, not on the first job
        return self

    def attack_plan(self) -> AttackPlan:
        """The attacks, budgets and default limits of this worker's jobs (see the docstring)."""
        from editing.attack_gate import plan_from_text

        return plan_from_text(self.attacks, self.attack_budgets, self.attack_limits)

    def eval_size(self, entry: ModelEntry) -> EvalSize | None:
        """The Locality set size for ``entry``'s jobs: the registry's, with this worker's overrides.

        None when neither sets one (the engine's default then applies: see
        :func:`editing.evaldata.eval_data_for`).
        """
        from editing.registry import DEFAULT_EVAL_SIZE, EVAL_SIZE_KEYS

        overrides = {key: getattr(self, key) for key in EVAL_SIZE_KEYS}  # same names as fields
        if all(v is None for v in overrides.values()):
            return entry.evaluation
        base = entry.evaluation or DEFAULT_EVAL_SIZE
        return base.with_overrides(overrides, "FEATUREEDIT_WORKER_LOCALITY_*")

    def recovery_bound(self, retry_interval: float = 5.0) -> float:
        """Worst-case seconds from a worker's death to its job being queued again."""
        return self.heartbeat_ttl + self.cleanup_interval + retry_interval + self.scheduler_interval


def callback_queue_name(queue_prefix: str) -> str:
    """The queue of callback deliveries, ``<queue_prefix>-callbacks``."""
    return f"{queue_prefix}-{CALLBACK_QUEUE_SUFFIX}"


def api_port() -> int:
    """The API's port in this container: ``PORT`` (set by the image), else 8000; what the health
    check of an API container probes."""
    raw = os.environ.get("PORT") or str(DEFAULT_API_PORT)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"PORT must be a port number such as 8000; received {raw!r}") from None
