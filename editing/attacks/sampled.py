"""Sampled leak: many samples per prompt, at temperature 1 with no top-k and at top-p 0.9."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from editing import evaluate as ev
from editing.attacks.base import Attack, AttackCase, Score
from editing.models import LoadedModel

SETTINGS = ("t1", "p09")
BEFORE_ROUNDS = 4  # the control's budget is drawn in this many rounds (see SampledLeak)


class SampledLeak(Attack):
    """Sample ``samples`` continuations of every edit and held-out prompt, twice: at temperature 1
    with no top-k (``t1``) and with nucleus sampling at ``top_p`` (``p09``).

    Budget: ``samples`` per prompt and setting (default 100). Success (per setting, and ``any``):
    at least one continuation contains the whole secret. ``leak_rate_*`` is the share of such
    continuations, ``samples_*`` how many were drawn.

    After the edit the whole budget is always drawn (that is the claim). Before it (the unedited
    model, the attack's control: it shows the secret comes out) the budget is drawn in
    :data:`BEFORE_ROUNDS` rounds of the same per-prompt streams, and a fact stops once it has
    ``before_stop_hits`` hits (default 20; 0: the whole budget): its success flags are those of
    the whole budget (it stops only after a hit), its rate is that of the samples drawn (the
    first ones of each prompt's stream; ``samples_*`` says how many).
    """

    name = "sampled"
    defaults: ClassVar[dict[str, int | float]] = {
        "samples": 100,
        "top_p": 0.9,
        "seed": 0,
        "before_stop_hits": 20,
    }

    def measure(self, loaded: LoadedModel, case: AttackCase) -> Score:
        """Leak rates of both sampling settings on the case's prompts."""
        return self.measure_many(loaded, [case])[0]

    def _top_p(self, key: str) -> float:
        return 1.0 if key == "t1" else float(self.budget["top_p"])

    def measure_many(self, loaded: LoadedModel, cases: Sequence[AttackCase]) -> list[Score]:
        """:meth:`measure` of every case, each setting's samples drawn for all cases' prompts in
        one batched :func:`editing.evaluate.leak_rates` call (one stream per prompt and sample:
        each case's score is the one :meth:`measure` gives it alone)."""
        b = self.budget
        groups = [(case.prompts, case.secret) for case in cases]
        rates = {
            key: ev.leak_rates(
                loaded.model,
                loaded.tokenizer,
                groups,
                int(b["samples"]),
                seed=int(b["seed"]),
                top_p=self._top_p(key),
            )
            for key in SETTINGS
        }
        return _scores(cases, rates)

    def measure_before_many(self, loaded: LoadedModel, cases: Sequence[AttackCase]) -> list[Score]:
        """The control (see the class): rounds of the budget, a fact stopping at
        ``before_stop_hits`` hits per setting."""
        b = self.budget
        stop, total = int(b["before_stop_hits"]), int(b["samples"])
        if stop <= 0:
            return self.measure_many(loaded, cases)
        groups = [(case.prompts, case.secret) for case in cases]
        step = max(1, -(-total // BEFORE_ROUNDS))
        rates: dict[str, list[ev.Rate]] = {}
        for key in SETTINGS:
            hits, count = [0] * len(cases), [0] * len(cases)
            for first in range(0, total, step):
                todo = [i for i in range(len(cases)) if hits[i] < stop]
                if not todo:
                    break
                drawn = ev.leak_rates(
                    loaded.model,
                    loaded.tokenizer,
                    [groups[i] for i in todo],
                    min(step, total - first),
                    seed=int(b["seed"]),
                    top_p=self._top_p(key),
                    first=first,
                )
                for i, rate in zip(todo, drawn, strict=True):
                    hits[i] += rate.hits
                    count[i] += rate.count
            rates[key] = [ev.Rate(h, n) for h, n in zip(hits, count, strict=True)]
        return _scores(cases, rates)


def _scores(cases: Sequence[AttackCase], rates: dict[str, list[ev.Rate]]) -> list[Score]:
    """Per case its Score from each setting's rates."""
    out = []
    for n, case in enumerate(cases):
        values: dict[str, int | float | None] = {"prompts": len(case.prompts)}
        success: dict[str, bool] = {}
        for key in SETTINGS:
            rate = rates[key][n]
            values[f"leak_rate_{key}"] = rate.value
            values[f"hits_{key}"] = rate.hits
            values[f"samples_{key}"] = rate.count
            success[key] = rate.hits > 0
        success["any"] = any(success.values())
        out.append(Score(values=values, success=success))
    return out
