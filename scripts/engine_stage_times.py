"""Engine seconds per stage of ``run_erasure`` on a demo world, for requests of N facts (issue #16).

Loads the model once, then erases the first N private facts of the world (after ``--offset``)
``--reps`` times per count, printing per run the stage timings (baseline, locate, edit,
evaluate), the total and R/G/L/ΔPPL. The first run of a process is cold (first torch calls, the
SAEs); later runs are warm, and ``--warmup`` makes one untimed 1-fact run first. ``--attacks
sampled,logit_lens`` also times the worker's attack suite on the run's edit (stage ``attacks``,
as :func:`editing.attack_gate.attack_result` runs it; ``--samples``: the sampled attack's budget,
the worker's default 20). ``--cache DIR`` uses a baseline cache under ``DIR`` (a featureedit
home; the attacks' before side too where the package caches it); without it nothing is cached.
Runs whatever ``editing`` package is first on the path, so ``PYTHONPATH=/path/to/an/older/checkout``
times an older version with the same command:

    OMP_NUM_THREADS=1 python scripts/engine_stage_times.py --counts 1 --offset 1 --reps 5 \\
        [--cache /tmp/fe-baselines]
    OMP_NUM_THREADS=1 python scripts/engine_stage_times.py --counts 1,10,100 --offset 1 \\
        --warmup --attacks sampled,logit_lens
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
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
    ap.add_argument("--warmup", action="store_true", help="one untimed 1-fact run first")
    ap.add_argument("--attacks", default="", help="attack suite to time, e.g. sampled,logit_lens")
    ap.add_argument("--samples", type=int, default=20, help="the sampled attack's budget")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editing.erase import run_erasure
    from editing.models import load_model
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
    attack = _attack_stage(loaded, args)
    if args.warmup:
        run_erasure(_request(args.model, facts[:1]), loaded, **kwargs)
    for n in (int(x) for x in args.counts.split(",")):
        request = _request(args.model, facts[:n])
        for rep in range(args.reps):
            t0 = time.perf_counter()
            result = run_erasure(request, loaded, **kwargs)
            stages = {k: round(v, 3) for k, v in result.timings.items()}
            if attack is not None and result.edit is not None:
                t1 = time.perf_counter()
                attack(request, result.edit)
                stages["attacks"] = round(time.perf_counter() - t1, 3)
            total = time.perf_counter() - t0
            m = result.metrics
            rates = {k: getattr(m, k).value for k in ("reliability", "generalization", "locality")}
            print(n, rep, stages, "total", round(total, 3), rates, "delta_ppl", m.delta_ppl)
            print(json.dumps({"facts": n, "rep": rep, "stages": stages, "total": total}))
            sys.stdout.flush()


def _request(model: str, facts: list) -> object:
    """The erasure request of demo ``facts``."""
    from editing.request import ErasureRequest

    chosen = [{"subject": f.subject, "relation": f.relation, "target": f.target} for f in facts]
    return ErasureRequest(model=model, facts=chosen)


def _attack_stage(loaded: object, args: argparse.Namespace) -> object:
    """``attack(request, edit)``: the attack suite of ``--attacks`` on the request's facts, or
    None without ``--attacks``; with ``--cache`` the unedited model's attack scores are kept
    there when the package can (:func:`editing.baseline.attack_before_cache`)."""
    if not args.attacks:
        return None
    import editing.baseline as baseline
    from editing.attacks import AttackCase
    from editing.attacks.suite import run_attacks

    names = args.attacks.split(",")
    budgets = {"sampled": {"samples": args.samples}}
    before = None
    if args.cache and hasattr(baseline, "attack_before_cache"):
        before = baseline.attack_before_cache(loaded, baseline.BaselineCache.for_home(args.cache))

    def attack(request: object, edit: object) -> None:
        cases = [AttackCase.from_fact(f) for f in request.facts]
        run_attacks(loaded, edit, cases, names, budgets, before_cache=before)

    return attack


if __name__ == "__main__":
    main()
