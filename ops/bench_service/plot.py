"""The service benchmark's growth plot (``featureedit bench --service --plot FILE``): seconds end
to end vs facts per request, log-log, one line per method and worker count."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_growth(result: dict[str, Any], path: str | Path) -> Path:
    """Write the PNG of ``result``'s fact growth (``summary.fact_growth``) to ``path``.

    ValueError if the result has no fact-count jobs. The dashed grey line is linear growth from
    the first method's 1-fact request (what "cost grows with every fact" looks like).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    growth = result["summary"].get("fact_growth") or []
    if not growth:
        raise ValueError("--plot: the benchmark ran no fact-count jobs (--fact-counts none)")
    series: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for g in growth:
        series.setdefault((g["method"], g["workers"]), []).append((g["facts"], g["seconds"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for (method, workers), points in sorted(series.items()):
        points.sort()
        style = "-" if workers == 1 else "--"
        marker = "o" if method == "featureedit" else "s"
        label = f"{'FeatureEdit' if method == 'featureedit' else method}, {workers} worker(s)"
        ax.plot(*zip(*points, strict=True), style, marker=marker, label=label)
    first = min(series.items())[1]
    if first and first[0][0] == 1:
        most = max(f for points in series.values() for f, _ in points)
        ax.plot([1, most], [first[0][1], first[0][1] * most], ":", color="grey", label="linear")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("facts per request")
    ax.set_ylabel("seconds, submitted → done")
    ax.set_title(f"featureedit bench --service ({result['model']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
