"""Grid search of FeatureEdit parameters on the demo world's benchmark facts.

Usage: python scripts/tune_featureedit.py [--model demo] [--facts 15] [--leak-samples 5]
[--only ROW ...] [--json]
Prints one row per configuration (mean Reliability, Generalization, Locality, ΔPPL, sampled leak
rate after the edit with its count, units, seconds). The defaults in editing/methods/params.py
(FeatureEditParams) were chosen from this table; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys

_GREEDY_ONLY = {"leak_bound": 1.0}  # rounds 1-2 predate the sampling-probability stopping rule
_PROTOTYPE = {**_GREEDY_ONLY, "objective": "first_token", "gamma": 0.3, "max_features": 12}
_TUNED = {**_GREEDY_ONLY, "gamma": 0.6, "objective": "target", "max_features": 32}
GRID: list[dict] = [  # every parameter not named here takes FeatureEditParams' default
    {**_PROTOTYPE},
    {**_PROTOTYPE, "objective": "target"},
    {**_PROTOTYPE, "selector": "write"},
    {**_PROTOTYPE, "selector": "write", "objective": "target"},
    {**_PROTOTYPE, "max_features": 32},
    {**_PROTOTYPE, "objective": "target", "max_features": 32},
    {**_PROTOTYPE, "selector": "write", "objective": "target", "max_features": 32},
    {**_PROTOTYPE, "rho": 1.0, "objective": "target", "max_features": 32},
    {**_PROTOTYPE, "gamma": 0.6, "objective": "target", "max_features": 32},  # = the defaults
    {**_PROTOTYPE, "variant": "project", "objective": "target", "max_features": 32},
    {**_PROTOTYPE, "selector": "activation", "variant": "rows"},  # the paper's literal method
    {**_PROTOTYPE, "selector": "activation", "variant": "project"},
    # second round, on the rebuilt world: re-locating on the edited model when candidates run out
    {**_TUNED, "relocate_rounds": 0},
    {**_TUNED, "relocate_rounds": 1},
    {**_TUNED, "relocate_rounds": 3},
    {**_TUNED, "relocate_rounds": 0, "gamma": 0.8},
    {**_TUNED, "relocate_rounds": 0, "gamma": 1.0},
    {**_TUNED, "relocate_rounds": 3, "gamma": 0.8},
    {**_TUNED, "relocate_rounds": 3, "max_features": 48},
    # third round (issue #13): stop only when sampling would not produce the secret either
    {**_GREEDY_ONLY},  # 19: the second round's defaults
    {"leak_bound": 0.05},
    {"leak_bound": 0.01},
    {"leak_bound": 0.002},
    {"leak_bound": 0.01, "max_features": 64, "relocate_rounds": 8},
    {"leak_bound": 0.002, "max_features": 64, "relocate_rounds": 8},
    {**_GREEDY_ONLY, "positions": "target"},  # 25: read at every target-predicting position
    {"positions": "target", "leak_bound": 0.01},
    {"positions": "target", "leak_bound": 0.01, "max_features": 64, "relocate_rounds": 8},
    {"leak_bound": 0.01, "strength": 1.5},
    {"positions": "target", "leak_bound": 0.01, "strength": 1.5},
    {**_GREEDY_ONLY, "positions": "target", "gamma": 0.3},  # 30
    {"positions": "target", "leak_bound": 0.01, "gamma": 0.3},
    {"positions": "target", "leak_bound": 0.01, "rho": 0.6},
    {"positions": "target", "leak_bound": 0.05},  # 33
    {**_GREEDY_ONLY, "positions": "target", "strength": 1.25},
    {"positions": "target", "leak_bound": 0.01, "strength": 1.25},
    # fourth round (issue #13): the flattening refinement (editing/methods/flatten.py)
    {"refine": "flatten"},  # 36
    {"refine": "flatten", "refine_extra_columns": 0},
    {"refine": "flatten", "refine_locality": 4.0},
    {"refine": "flatten", "refine_tokens": 2},
]


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--facts", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", type=int, nargs="*", help="grid row numbers to run")
    parser.add_argument(
        "--leak-samples", type=int, default=5, help="sampled continuations per prompt"
    )
    args = parser.parse_args(argv)

    from editing.bench import run_bench
    from editing.models import load_model

    loaded = load_model(args.model)
    rows = []
    for i, params in enumerate(GRID):
        if args.only and i not in args.only:
            continue
        result = run_bench(
            loaded,
            args.facts,
            methods=("featureedit",),
            params={"featureedit": params},
            leak_samples=args.leak_samples,
        )
        s = result["summary"]["featureedit"]
        row = {"row": i, "params": params}
        for k in ("reliability", "generalization", "locality", "delta_ppl", "units"):
            row[k] = s[k]["mean"]
        row["leak_rate_after"] = s["leak_rate_after"]["mean"]
        per_fact = result["per_fact"]["featureedit"]
        row["leak_max"] = max(r["leak_rate_after"] or 0 for r in per_fact)
        row["leak_hits"] = sum(r["leak_after_hits"] for r in per_fact)
        row["leak_samples"] = sum(r["leak_after_samples"] for r in per_fact)
        row["seconds"] = sum(v["mean"] or 0 for v in s["seconds"].values())
        rows.append(row)
        if not args.json:
            print(
                f"{i:>2} rel={row['reliability']:.3f} gen={row['generalization']:.3f} "
                f"loc={row['locality']:.3f} dppl={row['delta_ppl']:+.4f} "
                f"leak={row['leak_rate_after']:.4f} ({row['leak_hits']}/{row['leak_samples']}, "
                f"max {row['leak_max']:.3f}) "
                f"units={row['units']:.1f} s={row['seconds']:.2f}  {params}",
                flush=True,
            )
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
