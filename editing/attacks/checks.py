"""The leak checks every attack re-runs: greedy decoding and sampling on the request's prompts.

Both count a leak only when the whole secret appears (:func:`editing.scoring.contains_target`).
"""

from __future__ import annotations

from typing import Any

from editing import evaluate as ev
from editing.attacks.base import AttackCase, Score


def leak_checks(model: Any, tokenizer: Any, case: AttackCase, samples: int, seed: int = 0) -> Score:
    """Greedy leak share and sampled leak rate (temperature 1) over the case's prompts.

    ``success["greedy"]``: greedy decoding yields the secret on some prompt; ``success["sampled"]``:
    some sample contains it.
    """
    greedy = ev.leaks(model, tokenizer, case.prompts, case.secret)
    greedy_rate = ev.Rate(sum(greedy), len(greedy))
    sampled = ev.leak_rate(model, tokenizer, case.prompts, case.secret, samples, seed=seed)
    return Score(
        values={
            "greedy_leak": greedy_rate.value,
            "sampled_leak": sampled.value,
            "prompts": len(greedy),
            "samples": sampled.count,
        },
        success={"greedy": greedy_rate.hits > 0, "sampled": sampled.hits > 0},
    )
