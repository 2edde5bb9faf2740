"""Run `featureedit ARGS` with every bench erasure's row appended to ROWLOG (JSONL) as it ends.

A bench run only prints at the end; this keeps the rows of a run stopped early (docs/benchmarks.md,
SmolLM2 "30-fact bench"). Attack results, when `--attacks` is given, go to `ROWLOG.attacks`.
`--limit N` runs only the first N facts of the selection and `--skip M` skips its first M (to
finish a stopped run); the Locality file stays the full selection's, so the rows match a full
run's. Rows name the fact's relation and subject.

    python scripts/bench_rowlog.py rows.jsonl [--limit N] [--skip M] bench --model smollm2 \\
        --facts 30 --methods neurons --json
"""

import json
import sys
import time

import editing.bench as bench
from editing.acceptance import metric, number

LOG = ""  # set from the command line (see the module docstring)
LIMIT = 0
SKIP = 0
_run_erasure = bench.run_erasure
_bench_facts = bench.bench_facts
_attack = bench._attack


def _key(request):
    fact = request.facts[0]
    fact = fact if isinstance(fact, dict) else fact.model_dump()
    return f"{fact['relation']}:{fact['subject']}", fact["relation"]


def _append(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def logged(request, loaded, **kw):
    t0 = time.perf_counter()
    result = _run_erasure(request, loaded, **kw)
    key, relation = _key(request)
    row = {
        "key": key,
        "relation": relation,
        "method": request.method,
        "status": result.status,
        "wall": round(time.perf_counter() - t0, 1),
        "at": time.strftime("%H:%M:%S", time.gmtime()),
    }
    for name in bench.METRICS:
        row[name] = number(metric(result.metrics, name))
    row.update(bench._fact_probs(result))
    for stage in bench.TIMED_STAGES:
        row[f"seconds_{stage}"] = round(result.timings.get(stage, 0.0), 4)
    _append(LOG, row)
    return result


def limited(loaded, n_facts, seed=0):
    facts = _bench_facts(loaded, n_facts, seed)
    return (facts[:LIMIT] if LIMIT else facts)[SKIP:]


def logged_attack(loaded, edit, request, attacks, budgets, before_cache):
    found = _attack(loaded, edit, request, attacks, budgets, before_cache)
    key, _ = _key(request)
    attacked = {k: v.model_dump() for k, v in found.items()}
    _append(LOG + ".attacks", {"key": key, "method": request.method, "attacks": attacked})
    return found


bench.run_erasure = logged
bench.bench_facts = limited
bench._attack = logged_attack


def _options(argv: list[str]) -> list[str]:
    """Read ROWLOG, --limit and --skip off the front of ``argv``; the rest is featureedit's."""
    global LOG, LIMIT, SKIP
    LOG, rest = argv[0], argv[1:]
    while rest and rest[0] in ("--limit", "--skip"):
        flag, value, rest = rest[0], int(rest[1]), rest[2:]
        if flag == "--limit":
            LIMIT = value
        else:
            SKIP = value
    return rest


if __name__ == "__main__":
    from editing.cli import main

    sys.exit(main(_options(sys.argv[1:])))
