"""Schemathesis over the whole OpenAPI of the real app served over HTTP (uvicorn in a thread).

Every operation, every phase, bounded examples: no 5xx and every response as documented (status
code, content type, headers, body schema). Plus one regression test per bug it found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ops.drills.fuzz import run_schemathesis, schemathesis_available
from service.config import Settings
from tests.service.conftest import auth, body, serve_in_thread


@pytest.mark.slow
@pytest.mark.skipif(not schemathesis_available(), reason="schemathesis is not installed")
def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    settings: Settings, keys: dict[str, str], tmp_path: Any
) -> None:
    # short event streams: a fuzzed GET .../events of a queued erasure would otherwise stay open
    fast = settings.model_copy(update={"sse_max_seconds": 1.0})
    with serve_in_thread(fast) as url:
        report = run_schemathesis(
            url, keys["acme"], max_examples=10, timeout=170, report_dir=tmp_path
        )
    assert report.operations_tested >= 10, report.summary()
    assert report.passed, f"{report.summary()}\n{report.output_tail}"


def test_401_and_429_are_documented_on_every_v1_operation(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            if path.startswith("/v1"):
                for code in ("401", "429"):
                    content = responses[code]["content"]
                    assert list(content) == ["application/json"], (method, path, code)
            else:
                assert "401" not in responses, (method, path)


def test_event_stream_404_is_documented_as_json(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/v1/erasures/{erasure_id}/events"]["get"]
    assert list(op["responses"]["404"]["content"]) == ["application/json"]
    assert "text/event-stream" in op["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/erasures", "GET, POST"),
        ("PUT", "/v1/erasures/er_0", "GET, DELETE"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, keys: dict[str, str], method: str, path: str, allow: str
) -> None:
    response = client.request(method, path, headers=auth(keys["acme"]))
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert allow.split(", ")[0] in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "where"),
    [(b"\xff\xfe{not utf-8", None), (b'{"model": "demo-small",', "at character")],
)
def test_a_body_that_is_not_json_is_a_422_saying_so(
    make_client: Callable[..., TestClient], keys: dict[str, str], content: bytes, where: str | None
) -> None:
    client = make_client()
    response = client.post(
        "/v1/erasures",
        content=content,
        headers={**auth(keys["acme"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    msg = response.json()["detail"][0]["msg"]
    assert msg.startswith("the request body is not valid JSON") and "UTF-8 JSON" in msg
    if where:
        assert where in msg


@pytest.mark.parametrize("value", [False, "0.5"])
def test_a_number_sent_as_a_boolean_or_a_string_is_refused(
    client: TestClient, keys: dict[str, str], value: Any
) -> None:
    response = client.post(
        "/v1/erasures", json=body(thresholds={"max_delta_ppl": value}), headers=auth(keys["acme"])
    )
    assert response.status_code == 422, response.text
    assert "thresholds.max_delta_ppl" in response.json()["summary"]
    ok = client.post(
        "/v1/erasures", json=body(thresholds={"max_delta_ppl": 1}), headers=auth(keys["acme"])
    )
    assert ok.status_code == 202, ok.text


def test_a_callback_url_at_the_length_limit_is_not_a_500(
    client: TestClient, keys: dict[str, str]
) -> None:
    # a valid URL of exactly 2083 characters: its normalised form (trailing "/") is one too long
    # to parse as an HttpUrl again (what schemathesis found)
    host = ".".join(["a" * 63] * 32) + "." + "b" * 27
    url = f"https://{host}"
    assert len(url) == 2083
    response = client.post("/v1/erasures", json=body(callback_url=url), headers=auth(keys["acme"]))
    assert response.status_code in (202, 422), response.text
    for private in ("http://localhost:8080/x", "http://[::1]/x", "http://10.0.0.7/hook"):
        refused = client.post(
            "/v1/erasures", json=body(callback_url=private), headers=auth(keys["acme"])
        )
        assert refused.status_code == 422 and "public host" in refused.text, private


@pytest.mark.parametrize("subject", ["Dana\x00Berg", "Dana \x1b[31mBerg"])
def test_control_characters_in_a_subject_are_refused(
    client: TestClient, keys: dict[str, str], subject: str
) -> None:
    from tests.service.conftest import fact

    response = client.post(
        "/v1/erasures", json=body(facts=[fact(subject=subject)]), headers=auth(keys["acme"])
    )
    assert response.status_code == 422, response.text
    assert "facts.0.subject contains control characters" in response.json()["summary"]
