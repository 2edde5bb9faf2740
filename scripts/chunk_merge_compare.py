"""Chunked vs unchunked erasure of one request, under each chunk merge rule (editing.chunks).

Prints Reliability, Generalization, Locality, ΔPPL and the sampled leak after the edit of the
request erased in one piece and of its chunks merged by ``sum`` and by ``agreeing_mean`` (the
figures quoted in ``FeatureEditParams.chunk_merge``'s docstring: small world, 4 e-mail facts in
2 chunks). No secret or subject is printed.

    python scripts/chunk_merge_compare.py --home DIR [--facts 4] [--chunk 2] [--relation email]
"""

import argparse
import dataclasses
from pathlib import Path

from editing.chunks import MergedChunks, chunk_ranges, edit_chunk
from editing.erase import run_erasure
from editing.models import load_model
from editing.request import ErasureRequest
from editing.world.build import load_world

KEYS = ("reliability", "generalization", "locality", "delta_ppl", "leak_rate_after")


def _row(label: str, result) -> str:
    m = result.metrics.to_json()
    cells = [m[k]["value"] if isinstance(m[k], dict) else m[k] for k in KEYS]
    return label + "  " + "  ".join(f"{k} {v}" for k, v in zip(KEYS, cells))


def main() -> None:
    """Erase the request whole, then in chunks merged by each rule; print one line each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=2)
    ap.add_argument("--relation", default="email", help="a relation, or 'any'")
    args = ap.parse_args()
    world = load_world("small", args.home, progress=False)
    model = load_model("demo-small", home=args.home)
    facts, seen = [], set()
    for f in world.private_facts():
        if (args.relation in ("any", f.relation)) and f.subject not in seen:
            seen.add(f.subject)
            facts.append({"subject": f.subject, "relation": f.relation, "target": f.target})
        if len(facts) == args.facts:
            break
    accept = {"min_reliability": 0, "min_generalization": 0, "min_locality": 0}
    request = ErasureRequest(model="demo-small", facts=facts, thresholds=accept)
    print(_row("unchunked", run_erasure(request, model)))
    ranges = chunk_ranges(len(facts), args.chunk)
    chunks = [edit_chunk(request, model, i, a, b) for i, (a, b) in enumerate(ranges)]
    for rule in ("sum", "agreeing_mean"):
        merged = MergedChunks([dataclasses.replace(c, merge=rule) for c in chunks])
        print(_row(f"chunked/{rule}", run_erasure(request, model, editor=merged)))


if __name__ == "__main__":
    main()
