"""Bench FeatureEdit on a registered model without ``facts probe``: first 2 facts per relation.

``featureedit bench --model ID`` erases facts the model is known to answer, which needs the probe
(greedy decodes of every prompt of every fact; hours on a loaded CPU). This script takes the
first two facts of each relation of the shipped set instead: the erasure's own before-check marks
facts the model does not answer ``nothing_to_erase``, and Locality counts only prompts the model
answered before. ΔPPL is scored on the first 4 held-out Wikipedia passages (to fit the time).

    FEATUREEDIT_HOME=... python scripts/bench_unprobed.py N_FACTS ['{"param": value}'] [THREADS] \
        [METHOD] [MODEL_ID]

METHOD is ``featureedit`` (the default) or another registered method (e.g. ``neurons``); the
JSON parameters are that method's. MODEL_ID is a registered model (default ``smollm2``; e.g.
``gemma3-270m``).

Prints the bench document (JSON) with ``wall_seconds``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import editing.realdata.bench_data as bench_data
from editing.bench import run_bench
from editing.models import LoadedModel, load_model
from editing.realdata.facts import Fact, load_facts
from editing.realdata.text import load_text


def first_two(_loaded: LoadedModel, _rule: str = "majority") -> list[Fact]:
    """The first two facts of every relation (stand-in for the probe's known facts)."""
    counts: dict[str, int] = {}
    out = []
    for fact in load_facts().facts:
        if counts.get(fact.relation.name, 0) < 2:
            counts[fact.relation.name] = counts.get(fact.relation.name, 0) + 1
            out.append(fact)
    return out


def main() -> None:
    """Run the bench and print it."""
    n = int(sys.argv[1])
    params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    method = sys.argv[4] if len(sys.argv) > 4 else "featureedit"
    model_id = sys.argv[5] if len(sys.argv) > 5 else "smollm2"
    bench_data.known_facts = first_two
    loaded = load_model(model_id)
    ppl = Path(tempfile.mkdtemp()) / "ppl4.txt"
    ppl.write_text("\n".join(load_text("heldout")[:4]) + "\n")
    loaded.entry = replace(loaded.entry, ppl_file=str(ppl))
    t0 = time.time()
    doc = run_bench(loaded, n, methods=(method,), params={method: params}, leak_samples=0)
    doc["wall_seconds"] = round(time.time() - t0)
    print(json.dumps(doc, default=str))


if __name__ == "__main__":
    main()
