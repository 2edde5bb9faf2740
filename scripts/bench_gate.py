"""How many of a bench's erasures pass the service's default publish gate, per method.

Reads the JSON of `featureedit bench ... --attacks sampled,logit_lens --budget
sampled.samples=20 --json` (or the rows `scripts/bench_rowlog.py` logged: ROWLOG plus
ROWLOG.attacks) and decides every erasure again as a worker does by default: the request's
default thresholds (Reliability, Generalization, Locality, ΔPPL) and the default attack limits
(:data:`editing.acceptance.DEFAULT_ATTACK_LIMITS`) on that erasure's attack results. Prints, per
method, the number of erasures, of those passing the greedy criteria and of those passing the
whole gate, and the reasons of the rejected ones (no secret is printed: reasons hold figures).

    python scripts/bench_gate.py bench.json
    python scripts/bench_gate.py --rowlog rows.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from editing.acceptance import decide
from editing.attack_gate import default_plan
from editing.attacks.base import AttackResult
from editing.attacks.suite import summarise
from editing.request import Thresholds


def rows_of(argv: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Method -> bench rows (each with its ``attacks``), from a bench JSON or a row log."""
    if argv[0] != "--rowlog":
        return json.loads(Path(argv[0]).read_text())["per_fact"]
    rows = [json.loads(line) for line in Path(argv[1]).read_text().splitlines()]
    attacked = [json.loads(line) for line in Path(argv[1] + ".attacks").read_text().splitlines()]
    by_key = {(a["key"], a["method"]): a["attacks"] for a in attacked}
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found = by_key.get((row["key"], row["method"]), {})
        out.setdefault(row["method"], []).append(row | {"attacks": found})
    return out


def gate(row: dict[str, Any]) -> tuple[bool, bool, list[str]]:
    """``(greedy criteria pass, whole gate passes, reasons)`` of one bench row."""
    thresholds = default_plan().thresholds(Thresholds().model_dump())
    greedy, _ = decide(row, thresholds)
    results = {n: AttackResult.model_validate(r) for n, r in (row.get("attacks") or {}).items()}
    accepted, reasons = decide(row, thresholds, summarise([results]) if results else {})
    return greedy, accepted, reasons


def main() -> None:
    """Print the per-method counts as JSON."""
    report = {}
    for method, rows in rows_of(sys.argv[1:]).items():
        decided = [gate(r) for r in rows if r.get("status") != "nothing_to_erase"]
        reasons = Counter(r.split(" ")[0] + " " + r.split(" ")[1] for *_, rs in decided for r in rs)
        report[method] = {
            "erasures": len(decided),
            "greedy_criteria_pass": sum(g for g, _, _ in decided),
            "default_gate_pass": sum(a for _, a, _ in decided),
            "rejection_reasons": dict(reasons),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
