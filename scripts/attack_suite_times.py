"""Seconds of ``run_attacks`` (the worker's attack suite) for N facts of a demo world (issue #16).

Loads the model once, erases one private fact (its edit is the one attacked: applying and
reverting it costs the same whatever the facts), then times ``run_attacks`` on the first N
private facts per count and attack (default the worker's ``sampled,logit_lens``, sampled at
``samples=20``), printing one line per count with the seconds per attack and the total. Runs
whatever ``editing`` package is first on the path, so ``PYTHONPATH=/path/to/an/older/checkout``
times an older version with the same command:

    OMP_NUM_THREADS=1 python scripts/attack_suite_times.py --counts 1,10,50
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    """Parse the options, build the cases and edit, and time the attacks per count."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-small")
    ap.add_argument("--counts", default="1,10,50", help="fact counts, comma-separated")
    ap.add_argument("--attacks", default="sampled,logit_lens")
    ap.add_argument("--samples", type=int, default=20, help="the sampled attack's budget")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editing.attacks import AttackCase
    from editing.attacks.suite import run_attacks
    from editing.erase import run_erasure
    from editing.models import load_model
    from editing.request import ErasureRequest, FactSpec
    from editing.world.build import load_world

    loaded = load_model(args.model)  # the home comes from the settings (FEATUREEDIT_HOME)
    world = load_world(loaded.entry.demo_size or "default", loaded.home, progress=False)
    raw = [
        {"subject": f.subject, "relation": f.relation, "target": f.target}
        for f in world.private_facts()
    ]
    facts = [FactSpec(**f) for f in raw]
    edit = None
    for fact in raw:  # the first fact default FeatureEdit erases
        edit = run_erasure(ErasureRequest(model=args.model, facts=[fact]), loaded).edit
        if edit is not None:
            break
    names = args.attacks.split(",")
    budgets = {"sampled": {"samples": args.samples}}
    for n in (int(x) for x in args.counts.split(",")):
        cases = [AttackCase.from_fact(f) for f in facts[:n]]
        seconds = {}
        for name in names:
            t0 = time.perf_counter()
            run_attacks(loaded, edit, cases, [name], budgets)
            seconds[name] = time.perf_counter() - t0
        parts = " ".join(f"{k}={v:.1f}s" for k, v in seconds.items())
        print(f"facts={n} {parts} total={sum(seconds.values()):.1f}s", flush=True)


if __name__ == "__main__":
    main()
