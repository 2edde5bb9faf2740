"""Merge ``featureedit bench --service --json`` results into one fact-growth table and plot.

    python scripts/merge_bench_growth.py OUT.png RESULT.json [RESULT.json ...]

Prints each result's command and the merged growth table (Markdown) and writes the log-log PNG
(e.g. one run per method, as docs/benchmarks.md's *Growth with the fact count* was made).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ops.bench_service.job_times import fact_growth
from ops.bench_service.plot import plot_growth
from ops.bench_service.tables import fact_growth_markdown


def main(out: str, results: list[str]) -> None:
    """Print the commands and the merged table; write the PNG to ``out``."""
    docs = [json.loads(Path(name).read_text()) for name in results]
    growth = [g for doc in docs for g in fact_growth(doc["rows"])]
    plot_growth({"model": docs[0]["model"], "summary": {"fact_growth": growth}}, out)
    for doc in docs:
        print(f"Command: `{doc['command']}` ({doc['wall_seconds']} s wall)")
        for note in doc.get("notes") or []:
            print(f"- {note}")
    print()
    print(fact_growth_markdown(growth))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
