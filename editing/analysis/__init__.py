"""The knowledge microscope: analyses of where facts live (features vs neurons vs other bases).

Each analysis is a module with ``run(loaded, out, n_facts=..., **settings) -> dict`` that writes
PNG plots and ``results.json`` under ``out/<name>/``; :func:`run_analysis` runs one (or ``all``)
and refreshes ``out/index.html``. Registered analyses:

* ``decomposition``       SAE vs ICA vs PCA vs random directions, ΔProb of top-k ablation
* ``features-vs-neurons`` top-k SAE features (resid_post, mlp_out) vs top-k knowledge neurons
* ``monosemanticity``     related vs unrelated activations of located units (Cohen's d, MWU)
* ``ranges``              NeuronLens per-concept Gaussian ranges and their overlap
* ``dictionary-size``     located-feature statistics for SAEs of 1×, 2×, 4×, 8× d_model
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editing.errors import ConfigError
from editing.models import LoadedModel

ANALYSES: dict[str, str] = {
    "decomposition": "editing.analysis.decomposition",
    "features-vs-neurons": "editing.analysis.features_neurons",
    "monosemanticity": "editing.analysis.monosemanticity",
    "ranges": "editing.analysis.ranges",
    "dictionary-size": "editing.analysis.dictionary_size",
}

__all__ = ["ANALYSES", "default_out", "get_analysis", "run_analysis"]


def get_analysis(name: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of analysis ``name``; ConfigError listing the valid names."""
    try:
        module = ANALYSES[name]
    except KeyError:
        raise ConfigError(
            f"unknown analysis {name!r}; valid analyses are {', '.join(ANALYSES)} (or 'all')"
        ) from None
    return importlib.import_module(module).run


def default_out(loaded: LoadedModel) -> Path:
    """``$FEATUREEDIT_HOME/analysis/<model>/``."""
    return loaded.home / "analysis" / loaded.model_id


def run_analysis(
    name: str,
    loaded: LoadedModel,
    out: Path | None = None,
    n_facts: int | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run analysis ``name`` (or every one for ``all``); return ``{name: result}``.

    ``settings`` maps an analysis name to extra keyword arguments of its ``run`` (e.g.
    ``{"dictionary-size": {"steps": 100}}``); ``n_facts`` overrides each analysis's default.
    """
    from editing.analysis.common import write_index

    out = Path(out) if out is not None else default_out(loaded)
    names = list(ANALYSES) if name == "all" else [name]
    runs = {n: get_analysis(n) for n in names}
    results = {}
    for n, fn in runs.items():
        kwargs = dict((settings or {}).get(n, {}))
        if n_facts is not None:
            kwargs["n_facts"] = n_facts
        results[n] = fn(loaded, out, **kwargs)
    write_index(out, loaded.model_id)
    return results
