"""The compliance report, job metrics and logs of real erasures, end to end.

One module-scoped run: two erasures (one erasable fact of the small world, submitted over HTTP,
one naming a base checkpoint that does not exist, stored as the API does), run by a real rq
worker on real Redis,
then read back through the real HTTP API (uvicorn on loopback) and the ``featureedit report``
client: the report in JSON, HTML and PDF, ``/metrics`` parsed with prometheus_client, and every
log line the worker and the API wrote. The HTML page is also rendered with headless Chromium
(skipped, saying so, when Chromium is not installed).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store import FilesystemStore
from tests.service.test_report_formats import (
    ALLOWED_TAGS,
    assert_not_blank,
    chromium_screenshot,
    pdf_text,
)
from tests.workers.conftest import MODEL, Fact, live_stack, redis_bytes, secret_forms, submit

pytestmark = (
    pytest.mark.slow
)  # a real erasure on the small world (~30 s idle, minutes on a busy box)

LOGGERS = ("workers", "editing", "service", "rq")
REQUEST_ID = "compliance-check-1"
SUBMIT_ID = "submit-trace-7"


@dataclass
class Run:
    """What the module's run produced."""

    secret: str
    erasure_id: str
    failed_id: str
    store: FilesystemStore
    report: dict[str, Any]
    html: str
    pdf: bytes
    cli_pdf: bytes
    metrics: str
    report_headers: dict[str, str]
    logs: list[str]
    redis_dump: bytes


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    fe_home: Path,
    worker_redis_url: str,
    erasable_fact: Fact,
) -> Iterator[Run]:
    """Run the two erasures, then fetch everything over HTTP (see the module docstring)."""
    from editing.cli import main
    from service.client import FeatureeditClient
    from service.logs import JsonFormatter

    tmp = tmp_path_factory.mktemp("report-run")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with live_stack(tmp, fe_home, worker_redis_url, ("acme",), job_timeout=600) as stack:
            url, key, conn = stack.url, stack.keys["acme"], stack.conn
            accepted = httpx.post(
                f"{url}/v1/erasures",
                json={"model": MODEL, "facts": [erasable_fact.spec()]},
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": SUBMIT_ID},
            )
            assert accepted.status_code == 202, accepted.text
            erasure_id = accepted.json()["id"]
            failed_id = submit(  # as the API would; it refuses unknown base checkpoints itself
                stack.settings,
                stack.store,
                conn,
                [erasable_fact.spec()],
                base_checkpoint="0123456789abcdef",
            )
            stack.run_jobs(logging_level="INFO")
            with FeatureeditClient(url, api_key=key) as client:
                report = client.report(erasure_id)
                pdf = client.report(erasure_id, format="pdf")
            page = httpx.get(
                f"{url}/v1/erasures/{erasure_id}/report",
                params={"format": "html"},
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": REQUEST_ID},
            )
            cli_out = tmp / "report.pdf"
            args = ["report", erasure_id, "--format", "pdf", "--out", str(cli_out)]
            assert main([*args, "--url", url, "--api-key", key]) == 0
            metrics = httpx.get(f"{url}/metrics").text
            yield Run(
                secret=erasable_fact.target,
                erasure_id=erasure_id,
                failed_id=failed_id,
                store=stack.store,
                report=report,
                html=page.text,
                pdf=pdf,
                cli_pdf=cli_out.read_bytes(),
                metrics=metrics,
                report_headers=dict(page.headers),
                logs=buffer.getvalue().splitlines(),
                redis_dump=redis_bytes(conn),
            )
    finally:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.setLevel(saved[name])


def test_report_json_holds_footprint_lineage_hashes_and_code_version(run: Run) -> None:
    from editing.checkpoints import read_manifest

    r = run.report
    assert r["status"] == "succeeded" and r["erasure_id"] == run.erasure_id
    ckpt = r["checkpoint"]
    assert ckpt["checkpoint_id"] == r["checkpoint_id"]
    manifest = read_manifest(run.store.checkpoint_dir(r["checkpoint_id"]))
    assert ckpt["files"] == manifest["files"]  # the report states what was published
    assert ckpt["base_model"]["down_proj_sha256"] == r["base_weights_sha256"]
    assert ckpt["edited_down_proj_sha256"] != r["base_weights_sha256"]
    assert 0 < ckpt["delta_bytes_on_disk"] < ckpt["total_bytes"]
    edit = r["edit"]
    assert edit["entries_changed"] > 0 and edit["delta_bytes"] > 0
    assert all(layer["param"].endswith("weight") for layer in edit["layers"])
    assert r["code_version"]["package"] == "featureedit"
    assert r["facts"][0]["fingerprint"].startswith("hmac-sha256:")
    assert r["facts"][0]["units"], "no located unit in the report"


# The report's JSON as the API served it before the report was typed (editing.report): keys and
# their order, level by level. A change here changes the API.
REPORT_KEYS = [
    *("erasure_id", "checkpoint_id", "status", "model_id", "method", "params", "thresholds"),
    *("metrics", "acceptance", "attacks", "timings", "facts", "edit", "produces_checkpoint"),
    *("base_weights_sha256", "code_version", "checkpoint", "model", "request"),
    *("fact_fingerprints", "parent_checkpoint_id", "created_at", "finished_at", "attempts"),
    *("worker", "model_cache"),
]
METRIC_KEYS = [
    *("reliability", "generalization", "locality", "delta_ppl", "ppl_before", "ppl_after"),
    *("delta_prob", "exposure_before", "exposure_after", "leak_rate_before", "leak_rate_after"),
    *("facts_erased", "facts_nothing_to_erase", "units", "entries_changed"),
]
FACT_KEYS = [
    *("index", "subject_fingerprint", "relation", "fingerprint", "prompts", "units", "metrics"),
    *("evidence", "timings", "status"),
]
UNIT_KEYS = [
    *("kind", "site", "layer", "index", "score", "activation", "control_activation"),
    "prompt_count",
]
CHECKPOINT_KEYS = [
    *("checkpoint_id", "created_at", "publish", "format_version", "base_model"),
    *("parent_checkpoint_id", "edited_down_proj_sha256", "files", "total_bytes"),
    "delta_bytes_on_disk",
]
LAYER_KEYS = [
    *("layer", "param", "axis", "indices", "entries_changed", "base_sha256", "new_sha256"),
]
RATE, MEAN_RATE = ["value", "hits", "count"], ["value", "count", "facts"]


def test_report_json_keeps_its_shape(run: Run) -> None:
    r = run.report
    assert list(r) == REPORT_KEYS
    m = r["metrics"]
    assert list(m) == METRIC_KEYS
    assert list(m["reliability"]) == list(m["generalization"]) == MEAN_RATE
    assert list(m["locality"]) == [*RATE, "by_kind", "set_size"]
    assert all(list(rate) == RATE for rate in m["locality"]["by_kind"].values())
    assert list(r["acceptance"]) == ["accepted", "reasons"]
    (fact,) = r["facts"]
    assert list(fact) == FACT_KEYS
    assert list(fact["prompts"]) == ["edit", "edit_known", "heldout", "heldout_known", "control"]
    assert list(fact["metrics"]) == [
        *("before", "after", "reliability", "generalization", "delta_prob")
    ]
    for when in ("before", "after"):
        assert list(fact["metrics"][when]) == ["prob", "exposure", "leak_rate"]
        assert list(fact["metrics"][when]["leak_rate"]) == RATE
    assert list(fact["metrics"]["reliability"]) == RATE
    assert all(list(u) == UNIT_KEYS for u in fact["units"])
    assert list(r["edit"]) == ["entries_changed", "delta_bytes", "layers"]
    assert all(list(layer) == LAYER_KEYS for layer in r["edit"]["layers"])
    assert list(r["checkpoint"]) == CHECKPOINT_KEYS
    assert list(r["checkpoint"]["base_model"]) == ["model_id", "model_type", "down_proj_sha256"]
    assert list(r["code_version"]) == ["package", "version", "git_commit", "git_dirty"]
    assert list(r["model_cache"]) == ["cached", "load_seconds"]


def test_html_report_of_a_real_erasure(run: Run) -> None:
    page = run.html
    assert run.report_headers["x-request-id"] == REQUEST_ID
    assert "default-src 'none'" in run.report_headers["content-security-policy"]
    tags = re.findall(r"<([a-zA-Z][\w-]*)([^>]*)>", page)
    assert {name.lower() for name, _ in tags} <= ALLOWED_TAGS
    assert page.count("<svg") >= 4
    r = run.report
    for needle in (
        "ACCEPTED",
        run.erasure_id,
        r["checkpoint_id"],
        r["base_weights_sha256"],
        r["checkpoint"]["edited_down_proj_sha256"],
        r["facts"][0]["fingerprint"],
        r["edit"]["layers"][0]["param"],
        f"{r['edit']['delta_bytes']} B",
        *(f["sha256"] for f in r["checkpoint"]["files"]),
    ):
        assert needle in page, needle
    for form in secret_forms(run.secret):
        assert form.decode() not in page


def test_pdf_report_of_a_real_erasure(run: Run) -> None:
    assert run.pdf.startswith(b"%PDF-") and run.cli_pdf.startswith(b"%PDF-")
    text = re.sub(r"\s+", "", pdf_text(run.pdf))
    r = run.report
    for needle in ("ACCEPTED", run.erasure_id, r["checkpoint_id"], r["facts"][0]["fingerprint"]):
        assert needle in text, needle
    assert run.secret.replace(" ", "") not in text
    assert run.secret.encode() not in run.pdf
    assert re.sub(r"\s+", "", pdf_text(run.cli_pdf)) == text


def test_metrics_count_stages_outcomes_and_failure_reasons(run: Run) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(run.metrics)}
    hist = families["featureedit_job_stage_duration_seconds"]
    counts = {s.labels["stage"]: s.value for s in hist.samples if s.name.endswith("_count")}
    sums = {s.labels["stage"]: s.value for s in hist.samples if s.name.endswith("_sum")}
    for stage in ("locate", "edit", "evaluate", "publish", "baseline", "total"):
        assert counts[stage] == 1 and sums[stage] > 0, stage  # the succeeded erasure
    assert counts["queue_wait"] == 2  # both jobs started
    assert counts["model_load"] == 1  # loaded once, then warm
    finished = {
        s.labels["status"]: s.value for s in families["featureedit_erasures_finished"].samples
    }
    assert finished["succeeded"] == 1 and finished["failed"] == 1
    failures = {
        s.labels["reason"]: s.value for s in families["featureedit_erasure_failures"].samples
    }
    assert failures["invalid_request"] == 1 and sum(failures.values()) == 1
    assert run.secret not in run.metrics


def test_every_log_line_is_json_with_ids_and_no_secret(run: Run) -> None:
    assert run.logs
    lines = [json.loads(line) for line in run.logs]
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    job_lines = [x for x in lines if x["logger"].startswith("workers.jobs")]
    traced = [x for x in job_lines if x.get("erasure_id") == run.erasure_id]
    assert traced and all(x["request_id"] == SUBMIT_ID for x in traced)  # one trace id
    assert job_lines and all(
        x.get("erasure_id") in (run.erasure_id, run.failed_id) for x in job_lines
    )
    failed = [x for x in job_lines if x.get("failure_reason")]
    assert [x["failure_reason"] for x in failed] == ["invalid_request"]
    access = [x for x in lines if x["logger"] == "service.access"]
    mine = [x for x in access if x.get("request_id") == REQUEST_ID]
    assert mine and mine[0]["erasure_id"] == run.erasure_id
    text = "\n".join(run.logs)
    for form in secret_forms(run.secret):
        assert form.decode() not in text
    for form in secret_forms(run.secret):
        assert form not in run.redis_dump


def test_html_report_renders_in_headless_chromium(run: Run, tmp_path: Path) -> None:
    assert_not_blank(chromium_screenshot(run.html, tmp_path))
