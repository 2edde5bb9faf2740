"""Engine seconds per stage of ``run_erasure`` on a demo world, for requests of N facts (issue #16).

Loads the model once, then erases the first N private facts of the world (after ``--offset``)
``--reps`` times per count, printing per run the stage timings (baseline, locate, edit,
evaluate), the total and R/G/L/ΔPPL. The first run of a process is cold (first torch calls, the
SAEs); later runs are warm. ``--cache DIR`` uses a baseline cache under ``DIR`` (a featureedit
home); without it nothing is cached. Runs whatever ``editing`` package is first on the path, so
``PYTHONPATH=/path/to/an/older/checkout`` times an older version with the same command:

    OMP_NUM_THREADS=1 python scripts/engine_stage_times.py --counts 1 --offset 1 --reps 5 \\
        [--cache /tmp/fe-baselines]
"""

from __future__ import annotations

import argparse
import inspect
import time

import torch


def main() -> None:
    """Parse the options, run the erasures and print one line per run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-small")
    ap.add_argument("--counts", default="1", help="fact counts, comma-separated")
    ap.add_argument("--offset", type=int, default=0, help="skip this many private facts")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--cache", default=None, help="baseline cache home (default: none)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editing.erase import run_erasure
    from editing.models import load_model
    from editing.request import ErasureRequest
    from editing.world.build import load_world

    loaded = load_model(args.model)  # the home comes from the settings (FEATUREEDIT_HOME)
    world = load_world(loaded.entry.demo_size or "default", loaded.home, progress=False)
    facts = world.private_facts()[args.offset :]
    kwargs = {}
    if args.cache:  # older versions have no baseline cache
        if "baseline_cache" not in inspect.signature(run_erasure).parameters:
            raise SystemExit("this editing package has no baseline cache")
        from editing.baseline import BaselineCache

        kwargs["baseline_cache"] = BaselineCache.for_home(args.cache)
    for n in (int(x) for x in args.counts.split(",")):
        chosen = [
            {"subject": f.subject, "relation": f.relation, "target": f.target} for f in facts[:n]
        ]
        request = ErasureRequest(model=args.model, facts=chosen)
        for rep in range(args.reps):
            t0 = time.perf_counter()
            result = run_erasure(request, loaded, **kwargs)
            total = time.perf_counter() - t0
            m = result.metrics
            rates = {k: getattr(m, k).value for k in ("reliability", "generalization", "locality")}
            stages = {k: round(v, 3) for k, v in result.timings.items()}
            print(n, rep, stages, "total", round(total, 3), rates, "delta_ppl", m.delta_ppl)


if __name__ == "__main__":
    main()
