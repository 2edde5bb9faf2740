"""Per method, a bench's mean figures and how many erasures pass the default publish gate.

Reads the JSON of `featureedit bench ... --attacks sampled,logit_lens --budget
sampled.samples=20 --json` (or the rows `scripts/bench_rowlog.py` logged: ROWLOG plus
ROWLOG.attacks: a run stopped early still counts) and decides every erasure again as a worker
does by default: the request's
default thresholds (Reliability, Generalization, Locality, ΔPPL) and the default attack limits
(:data:`editing.acceptance.DEFAULT_ATTACK_LIMITS`) on that erasure's attack results. Prints, per
method, the number of erasures, the mean R, G, Locality and ΔPPL, the median P(target) before
and after, the mean sampled leak after (``leak_rate_t1``), the share of facts the logit lens
recovers at B = 1 and 20 after, the number passing the greedy criteria and the whole gate, and
the rejection reasons (no secret is printed: reasons hold figures).

    python scripts/bench_gate.py bench.json
    python scripts/bench_gate.py --rowlog rows.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from editing.acceptance import decide
from editing.attack_gate import default_plan
from editing.attacks.base import AttackResult
from editing.attacks.suite import summarise
from editing.request import Thresholds

METRICS = ("reliability", "generalization", "locality", "delta_ppl", "units", "entries_changed")


def rows_of(argv: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Method -> bench rows (each with its ``attacks``), from a bench JSON or a row log."""
    if argv[0] != "--rowlog":
        return json.loads(Path(argv[0]).read_text())["per_fact"]
    rows = [json.loads(line) for line in Path(argv[1]).read_text().splitlines()]
    log = Path(argv[1] + ".attacks")  # absent until the first erasure's attacks end
    attacked = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
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


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(f"{statistics.median(vals):.3g}") if vals else None


def _after(row: dict[str, Any], attack: str, part: str, key: str) -> Any:
    return (
        (((row.get("attacks") or {}).get(attack) or {}).get("after") or {}).get(part, {}).get(key)
    )


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean metrics, median P(target) and the attack figures after the edit, over ``rows``."""
    out: dict[str, Any] = {m: _mean([r.get(m) for r in rows]) for m in METRICS}
    out |= {p: _median([r.get(p) for r in rows]) for p in ("prob_before", "prob_after")}
    out["sampled_leak_after"] = _mean(
        [_after(r, "sampled", "values", "leak_rate_t1") for r in rows]
    )
    for k in ("any@1", "any@20"):
        out[f"lens_{k}_after"] = _mean([_after(r, "logit_lens", "success", k) for r in rows])
    return out


def _criterion(reason: str) -> str:
    """The criterion a rejection reason names (its words before the figure or the verdict)."""
    words = []
    for word in reason.split():
        if word[0].isdigit() or word[0] == "~" or word == "could":
            break
        words.append(word)
    return " ".join(words) + (" (not measured)" if "could not" in reason else "")


def main() -> None:
    """Print the per-method figures and counts as JSON."""
    report = {}
    for method, rows in rows_of(sys.argv[1:]).items():
        rows = [r for r in rows if r.get("status") != "nothing_to_erase"]
        decided = [gate(r) for r in rows]
        reasons = Counter(_criterion(r) for *_, rs in decided for r in rs)
        report[method] = {
            "erasures": len(decided),
            **figures(rows),
            "greedy_criteria_pass": sum(g for g, _, _ in decided),
            "default_gate_pass": sum(a for _, a, _ in decided),
            "rejection_reasons": dict(reasons),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
