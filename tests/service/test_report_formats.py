"""The compliance report's HTML and PDF formats, the ``report`` CLI and the job metrics on
``/metrics`` (real Redis, real HTTP where the CLI is involved; no torch).

The reports here are built with the typed model (:func:`tests.service.reports.sample_report`);
``tests/workers/test_report_observability.py`` renders the report of a real erasure.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.job_metrics import FAILURE_REASONS, TIMING_STAGES, JobMetrics
from tests.service.conftest import SECRET, auth, body
from tests.service.reports import SHA, sample_report, sample_report_json

ERASURE_ID = "er_0123456789abcdef01234567"

ALLOWED_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "b"),
    *("code", "table", "tr", "th", "td", "figure", "svg", "rect", "line", "text"),
}


def _stored(client, keys, store) -> str:
    r = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    erasure_id = r.json()["id"]
    store.put_report(erasure_id, sample_report_json(erasure_id))
    return erasure_id


def _get(client, keys, erasure_id: str, fmt: str):
    return client.get(
        f"/v1/erasures/{erasure_id}/report", params={"format": fmt}, headers=auth(keys["acme"])
    )


def pdf_text(data: bytes) -> str:
    """The text of every page of a PDF (pypdf)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def chromium_screenshot(page_html: str, tmp: Path, size: tuple[int, int] = (1200, 2000)) -> Path:
    """Render ``page_html`` with headless Chromium into a PNG (skips when it is not installed)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): no screenshot")
    page = tmp / "report.html"
    page.write_text(page_html, encoding="utf-8")
    shot = tmp / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return shot


def assert_not_blank(shot: Path, size: tuple[int, int] = (1200, 2000)) -> None:
    """The screenshot exists, has the window's size and shows text, tables and bars."""
    from PIL import Image, ImageStat

    assert shot.is_file() and shot.stat().st_size > 10_000
    image = Image.open(shot).convert("L")
    assert image.size == size
    assert ImageStat.Stat(image).stddev[0] > 20  # not a blank page
    dark = sum(n for level, n in enumerate(image.histogram()) if level < 128)
    assert dark > 0.01 * size[0] * size[1]  # text, tables and bars drawn
    colored = Image.open(shot).convert("RGB").crop((0, 0, size[0], size[1] // 2))
    r, g, b = (ImageStat.Stat(band).mean[0] for band in colored.split())
    assert max(r, g, b) - min(r, g, b) > 0.5  # the coloured verdict and bars, not only grey


def test_html_report_renders_in_headless_chromium(client, keys, store, tmp_path):
    erasure_id = _stored(client, keys, store)
    page = _get(client, keys, erasure_id, "html").text
    assert_not_blank(chromium_screenshot(page, tmp_path))


def test_html_report_is_self_contained_escaped_and_complete(client, keys, store):
    erasure_id = _stored(client, keys, store)
    page = _get(client, keys, erasure_id, "html")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<script" not in text and "<img" not in text and "&lt;script&gt;" in text
    tags = re.findall(r"<([a-zA-Z][\w-]*)([^>]*)>", text)
    assert {name.lower() for name, _ in tags} <= ALLOWED_TAGS
    for _, attrs in tags:  # nothing loaded, nothing run
        assert not re.search(r"\b(src|href|on\w+)\s*=", attrs), attrs
    assert "url(" not in text and "@import" not in text
    assert text.count("<svg") >= 4  # acceptance, leak rate, exposure, perplexity, per fact...
    for needle in (
        "ACCEPTED",
        "hmac-sha256:" + SHA,  # the fact's keyed fingerprint
        "0123456789abcdef",  # checkpoint id
        "ef" * 32,  # edited hash
        "12" * 32,  # file sha256
        "model.layers.1.mlp.down_proj.weight",
        "4160 B",  # delta size
        "abc123",  # code version
        "&gt;= 0.9",  # threshold vs measured
        "Attacks on the edit",  # each attack: budget, before and after, control
        "samples=20",
        "leak_rate_t1",
        "control_exposure",
        "sampled worst fact leak_rate_t1",  # the attack limit in the acceptance table
        "&lt;= 0.1",
    ):
        assert needle in text, needle
    assert SECRET not in text


def test_pdf_report_parses_and_holds_the_key_fields(client, keys, store):
    erasure_id = _stored(client, keys, store)
    r = _get(client, keys, erasure_id, "pdf")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert "attachment" in r.headers["content-disposition"]
    assert r.content.startswith(b"%PDF-")
    text = pdf_text(r.content)
    flat = re.sub(r"\s+", "", text)
    for needle in (
        *(erasure_id, "ACCEPTED", "0123456789abcdef", "hmac-sha256:" + SHA, "4160B"),
        *("Attacks on the edit", "samples=20", "leak_rate_t1", "control_exposure"),
    ):
        assert re.sub(r"\s+", "", needle) in flat, needle
    assert "<script>" in text  # shown literally, as text
    assert SECRET not in text


# An erasure reported by an older worker: no checkpoint summary, attempts, code version, edit,
# timings or per-fact prompts; a rate as a bare number, a unit without its control activation,
# a key this code does not know. Hand-written on purpose: it is a stored document of the past.
OLD_REPORT: dict[str, Any] = {
    "status": "rejected",
    "model": "demo-small",
    "method": "neurons",
    "metrics": {
        "reliability": 0.5,
        "locality": {"value": 0.8, "hits": 4, "count": 5},
        "exposure_before": 9.5,
        "retired_metric": 3,
    },
    "thresholds": {"min_reliability": 0.9},
    "acceptance": {"accepted": False, "reasons": ["reliability 0.500 < 0.9"]},
    "facts": [
        {
            "relation": "phone",
            "fingerprint": "hmac-sha256:" + SHA,
            "units": [{"kind": "neuron", "layer": 2, "index": 7, "activation": 1.5}],
        }
    ],
    "checkpoint_id": None,
}


def test_old_shape_report_still_renders(client, keys, store):
    r = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    erasure_id = r.json()["id"]
    store.put_report(erasure_id, OLD_REPORT)
    doc = _get(client, keys, erasure_id, "json").json()
    assert doc == {"erasure_id": erasure_id, **OLD_REPORT}  # served as stored
    page = _get(client, keys, erasure_id, "html")
    assert page.status_code == 200
    for needle in ("REJECTED", "reliability 0.500 &lt; 0.9", "neuron L2#7", "retired_metric"):
        assert needle in page.text, needle
    assert "No checkpoint was published" in page.text and "No weight edit" in page.text
    assert "FAIL" in page.text  # the acceptance rule (editing.acceptance) on the old metrics
    pdf = _get(client, keys, erasure_id, "pdf")
    assert pdf.status_code == 200 and "REJECTED" in pdf_text(pdf.content)


def test_typed_report_renders_like_its_json():
    from service.report_html import render_report_html

    report = sample_report(ERASURE_ID)
    typed = render_report_html(report, erasure_id=ERASURE_ID, status="succeeded")
    stored = render_report_html(report.to_json(), erasure_id=ERASURE_ID, status="succeeded")
    assert typed == stored


def test_unknown_report_format_is_a_clear_422(client, keys, store):
    erasure_id = _stored(client, keys, store)
    r = _get(client, keys, erasure_id, "docx")
    assert r.status_code == 422
    assert "pdf" in r.text and "html" in r.text


def test_report_cli_writes_pdf_and_html_over_http(live_server, keys, store, tmp_path, capsys):
    from editing.cli import main
    from service.client import FeatureeditClient

    with FeatureeditClient(live_server, api_key=keys["acme"]) as client:
        erasure_id = client.submit(body())["id"]
    store.put_report(erasure_id, sample_report_json(erasure_id, relation="Dana Berg"))
    common = ["--url", live_server, "--api-key", keys["acme"]]
    out = tmp_path / "report.pdf"
    assert main(["report", erasure_id, "--format", "pdf", "--out", str(out), *common]) == 0
    assert out.read_bytes().startswith(b"%PDF-") and "Dana Berg" in pdf_text(out.read_bytes())
    html_out = tmp_path / "report.html"
    assert main(["report", erasure_id, "--out", str(html_out), *common]) == 0
    assert "Dana Berg" in html_out.read_text()
    missing = tmp_path / "nowhere" / "r.pdf"
    assert main(["report", erasure_id, "--format", "pdf", "--out", str(missing), *common]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_job_metrics_on_metrics_page_parse_with_closed_labels(client, rconn, settings):
    from prometheus_client.parser import text_string_to_metric_families

    jobs = JobMetrics(rconn, settings.redis_prefix)
    jobs.observe_stages({"locate": 0.3, "edit": 0.02, "queue_wait": 1.5, "bogus": 1.0})
    jobs.observe_stages({"locate": 45.0})
    jobs.count_finished("succeeded")
    jobs.count_finished("failed", "timeout")
    jobs.count_finished("failed", f"free text with {SECRET}")  # not a reason: counted as other
    jobs.count_finished("exploded")  # not a terminal status: ignored
    text = client.get("/metrics").text
    assert SECRET not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["featureedit_job_stage_duration_seconds"]
    assert hist.type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in hist.samples}
    count = "featureedit_job_stage_duration_seconds_count"
    bucket = "featureedit_job_stage_duration_seconds_bucket"
    assert samples[(count, (("stage", "locate"),))] == 2
    assert samples[(bucket, (("le", "0.5"), ("stage", "locate")))] == 1
    assert samples[(bucket, (("le", "+Inf"), ("stage", "locate")))] == 2
    assert samples[(count, (("stage", "queue_wait"),))] == 1
    assert {s.labels["stage"] for s in hist.samples} == set(TIMING_STAGES)
    finished = {
        s.labels["status"]: s.value for s in families["featureedit_erasures_finished"].samples
    }
    assert finished["succeeded"] == 1 and finished["failed"] == 2
    failures = {
        s.labels["reason"]: s.value for s in families["featureedit_erasure_failures"].samples
    }
    assert set(failures) == set(FAILURE_REASONS)
    assert failures["timeout"] == 1 and failures["other"] == 1


def test_metrics_page_survives_redis_down(make_client):
    down = make_client(redis_url="redis://127.0.0.1:1/0")
    r = down.get("/metrics")
    assert r.status_code == 200 and "featureedit_redis_up 0" in r.text
    assert "featureedit_job_stage_duration_seconds" not in r.text


@pytest.mark.parametrize("level", ["INFO"])
def test_api_log_lines_are_json_with_request_and_erasure_ids(client, keys, level):
    import json
    import logging

    from service.logs import JsonFormatter

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    try:
        r = client.post(
            "/v1/erasures", json=body(), headers={**auth(keys["acme"]), "X-Request-ID": "rid-42"}
        )
        erasure_id = r.json()["id"]
        assert r.headers["x-request-id"] == "rid-42"
        client.get(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
        assert SECRET not in json.dumps(line)
    access = [x for x in lines if x["logger"] == "service.access"]
    assert access[0]["request_id"] == "rid-42" and access[0]["status"] == 202
    assert any(x.get("erasure_id") == erasure_id for x in access)
