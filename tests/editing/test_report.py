"""The typed erasure report (:mod:`editing.report`): stored reports of any age load, keep their
shape when written back, and the acceptance rule reads typed and stored metrics alike. No torch."""

from __future__ import annotations

import json
import subprocess
import sys

from editing.acceptance import assess, decide
from editing.report import ErasureReport, LocalityRate, Metrics, ReportedRate, load_report

THRESHOLDS = {
    "min_reliability": 0.9,
    "min_generalization": 0.7,
    "min_locality": 0.9,
    "max_delta_ppl": 0.05,
}


def test_an_empty_or_old_report_loads_with_defaults() -> None:
    empty = load_report({})
    assert empty.facts == [] and empty.accepted is None and empty.edit is None
    assert empty.metrics.reliability is None and empty.to_json() == {}
    old = load_report({"model": "demo", "metrics": {"reliability": 0.5}, "checkpoint_id": "c1"})
    assert old.base_model_id == "demo" and old.published_checkpoint_id == "c1"
    assert old.metrics.reliability == ReportedRate(value=0.5)  # a bare number is its value


def test_written_back_a_report_keeps_its_shape_order_and_unknown_keys() -> None:
    doc = {
        "status": "nothing_to_erase",
        "metrics": {"note": "nothing to erase"},
        "acceptance": {"accepted": False, "reasons": ["nothing to erase"]},
        "facts": [
            {
                "index": 0,
                "prompts": {"edit": 3, "edit_known": 0},
                "units": [],
                "metrics": {},
                "evidence": {"method_specific": [1, 2]},
                "timings": {},
                "status": "nothing_to_erase",
                "from_the_future": {"x": 1},
            }
        ],
        "edit": None,
        "retention": {"policy": "later", "passed": True},  # a section this code does not know
    }
    report = load_report(doc)
    assert json.dumps(report.to_json()) == json.dumps(doc)
    assert report.model_extra == {"retention": {"policy": "later", "passed": True}}


def test_rates_write_only_the_counts_they_have() -> None:
    mean = ReportedRate(value=0.75, count=4, facts=1)
    assert mean.to_json() == {"value": 0.75, "count": 4, "facts": 1}
    locality = LocalityRate(value=1.0, hits=2, count=2, by_kind={}, set_size=10)
    assert list(locality.to_json()) == ["value", "hits", "count", "by_kind", "set_size"]


def test_acceptance_reads_typed_and_stored_metrics_alike() -> None:
    metrics = Metrics(
        reliability=ReportedRate(value=1.0, count=8, facts=1),
        generalization=ReportedRate(value=None, count=0, facts=0),
        locality=LocalityRate(value=0.8, hits=8, count=10),
        delta_ppl=0.01,
    )
    typed = decide(metrics, THRESHOLDS)
    assert typed == decide(metrics.to_json(), THRESHOLDS)
    assert typed == (False, ["locality 0.800 < 0.9"])
    verdicts = {c.name: c.verdict for c in assess(metrics, THRESHOLDS)}
    assert verdicts == {
        "reliability": "pass",
        "generalization": "not measured",
        "locality": "FAIL",
        "delta_ppl": "pass",
    }


def test_the_report_model_imports_no_torch() -> None:
    code = "import sys, editing.report, editing.acceptance; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_library_fields_come_first_in_the_stored_order() -> None:
    fields = list(ErasureReport.model_fields)
    assert fields[:3] == ["status", "model_id", "method"]
    assert fields.index("base_weights_sha256") < fields.index("erasure_id")
