"""Per-prompt P(target) before and after one FeatureEdit erasure of a registered model's facts.

Diagnoses *which* edit and held-out prompts an erasure stops (e.g. ``positions="last"`` against
``positions="subject"``, issue #14): erases each of the bench's first N facts (the same facts as
``scripts/bench_unprobed.py N``) whose relation is named, and prints, per prompt, the
teacher-forced P(target) on the unedited and on the edited model and the column features were
read at (``positions="subject"``: the subject's last token; -1 marks the fallback to the last
prompt token). Genuine world-knowledge facts only: it prints prompts and targets.

    FEATUREEDIT_HOME=... python scripts/position_diag.py N 'PARAMS_JSON' RELATION[,RELATION...] \
        [MODEL_ID]
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import torch

import editing.realdata.bench_data as bench_data
from editing.bench import bench_facts
from editing.erase import run_erasure
from editing.locate import subject_positions
from editing.methods.base import FactCase, FactOutcome
from editing.methods.registry import get_method
from editing.models import LoadedModel, load_model
from editing.request import ErasureRequest, with_model_params
from editing.scoring import score_targets

sys.path.insert(0, "scripts")
from bench_unprobed import first_two


class Probe:
    """Wraps a method: scores the case's prompts before and after its edit."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def _probs(self, loaded: LoadedModel, prompts: list[str], secret: str) -> list[float]:
        scores = score_targets(loaded.model, loaded.tokenizer, prompts, [secret] * len(prompts))
        return [math.exp(s.logprob) for s in scores]

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """The inner method's erasure, with a per-prompt table printed around it."""
        prompts = case.edit_prompts + case.heldout_prompts
        before = self._probs(loaded, prompts, case.secret)
        outcome = self.inner.erase_fact(loaded, case)
        after = self._probs(loaded, prompts, case.secret)
        cols = subject_positions(loaded.tokenizer, prompts, [[case.subject]] * len(prompts))
        print(f"== {case.relation}: {case.subject} -> {case.secret} ({len(outcome.units)} units)")
        for i, (p, b, a, c) in enumerate(zip(prompts, before, after, cols)):
            kind = "edit" if i < len(case.edit_prompts) else "held"
            col = c if c else -1
            print(f"  {kind} col {col:>2}  P {b:.4f} -> {a:.2e}  {p!r}")
        return outcome


def main() -> None:
    """Erase the named relations' facts one at a time and print the tables."""
    n, params, relations = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3].split(",")
    model_id = sys.argv[4] if len(sys.argv) > 4 else "smollm2"
    torch.set_num_threads(1)
    bench_data.known_facts = first_two
    loaded = load_model(model_id)
    for fact in bench_facts(loaded, n):
        if fact["relation"] not in relations:
            continue
        request = ErasureRequest(model=model_id, facts=[fact], params=params)
        request = with_model_params(request, loaded.entry.method_defaults("featureedit"))
        editor = Probe(get_method("featureedit", request.params))
        run_erasure(request, loaded, leak_samples=0, editor=editor)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
