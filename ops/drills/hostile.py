"""The hostile-requests drill: malformed, oversized, injected and unauthenticated requests."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ops.drills.base import DrillContext, Observations, drill
from ops.stack import DEMO_MODEL

# A fictional secret that only this drill sends; it must come back nowhere.
HOSTILE_SECRET = "555-0142-8817"
INJECTIONS = ("' OR '1'='1' --", "{{7*7}}", "${jndi:ldap://x/a}", "<script>alert(1)</script>")


def _fact(**overrides: Any) -> dict[str, Any]:
    return {"subject": "Dana Berg", "relation": "phone", "target": HOSTILE_SECRET, **overrides}


def _body(**overrides: Any) -> dict[str, Any]:
    return {"model": DEMO_MODEL, "facts": [_fact()], **overrides}


def hostile_cases(key: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(label, method, path, httpx request kwargs)`` of every hostile request."""
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("malformed JSON", "POST", "/v1/erasures", {"content": b'{"model": "demo-small", "fa'}),
        ("not UTF-8", "POST", "/v1/erasures", {"content": b"\xff\xfe\x00{", "headers": {}}),
        ("JSON array body", "POST", "/v1/erasures", {"json": [_body()]}),
        ("facts is a string", "POST", "/v1/erasures", {"json": _body(facts=HOSTILE_SECRET)}),
        ("model is a number", "POST", "/v1/erasures", {"json": _body(model=5)}),
        (
            "threshold as boolean",
            "POST",
            "/v1/erasures",
            {"json": _body(thresholds={"min_locality": True})},
        ),
        ("unknown field", "POST", "/v1/erasures", {"json": _body(secret=HOSTILE_SECRET)}),
        (
            "oversized body (2 MiB)",
            "POST",
            "/v1/erasures",
            {"content": b"{" + b" " * (2 << 20) + b"}"},
        ),
        (
            "oversized chunked body",
            "POST",
            "/v1/erasures",
            {"content": iter([b" " * (1 << 20)] * 3)},
        ),
        (
            "2000 facts",
            "POST",
            "/v1/erasures",
            {"json": _body(facts=[_fact(subject=f"P {i}") for i in range(2000)])},
        ),
        (
            "control characters in subject",
            "POST",
            "/v1/erasures",
            {"json": _body(facts=[_fact(subject="Dana\x00Berg\x1b[31m")])},
        ),
        (
            "unicode relation",
            "POST",
            "/v1/erasures",
            {"json": _body(facts=[_fact(relation="phöne\u202e")])},
        ),
        ("empty target", "POST", "/v1/erasures", {"json": _body(facts=[_fact(target="")])}),
        ("path traversal in erasure id", "GET", "/v1/erasures/..%2F..%2Fkeys%2Fapi_keys.json", {}),
        ("path traversal in checkpoint id", "GET", "/v1/checkpoints/..%2Fstore", {}),
        (
            "path traversal in file name",
            "GET",
            "/v1/checkpoints/abc/files/..%2F..%2Fkeys%2Frequest.key",
            {},
        ),
        ("dot-dot file name", "GET", "/v1/checkpoints/abc/files/../../etc/passwd", {}),
        ("NUL in id", "GET", "/v1/erasures/er_%00", {}),
        ("secret in the URL query", "GET", f"/v1/erasures/er_missing?target={HOSTILE_SECRET}", {}),
        ("secret in a query of list", "GET", f"/v1/erasures?status={HOSTILE_SECRET}", {}),
        ("bad cursor", "GET", "/v1/erasures?cursor=%FF%FE", {}),
        ("limit out of range", "GET", "/v1/erasures?limit=100000", {}),
        ("no API key", "GET", "/v1/erasures", {"headers": {"Authorization": ""}}),
        (
            "garbage API key",
            "GET",
            "/v1/erasures",
            {"headers": {"Authorization": "Bearer fe_garbage"}},
        ),
        ("Basic auth", "GET", "/v1/erasures", {"headers": {"Authorization": "Basic YTpi"}}),
        (
            "10 KB API key",
            "GET",
            "/v1/models",
            {"headers": {"Authorization": "Bearer " + "x" * 10_000}},
        ),
        (
            "secret as API key",
            "POST",
            "/v1/erasures",
            {"json": _body(), "headers": {"Authorization": f"Bearer {HOSTILE_SECRET}"}},
        ),
        (
            "revoked-looking key",
            "GET",
            "/v1/erasures",
            {"headers": {"Authorization": f"Bearer {key[:-4]}AAAA"}},
        ),
    ]
    for text in INJECTIONS:
        cases.append(
            (
                f"injection {text!r} as id",
                "GET",
                f"/v1/erasures/{httpx.URL(text).raw_path.decode()}",
                {},
            )
        )
        cases.append(
            (f"injection {text!r} as model", "POST", "/v1/erasures", {"json": _body(model=text)})
        )
    for _, _, _, kwargs in cases:
        if "content" in kwargs:
            kwargs.setdefault("headers", {}).update(json_headers)
    return cases


@drill(
    "hostile-requests",
    """Malformed JSON, wrong types, oversized and chunked bodies, 2000 facts, path traversal in
    ids and file names, control and bidi characters, bad API keys, injection-like strings and a
    secret in the URL query each get a 4xx with a message saying what is wrong; zero 5xx; the
    secret appears in no response, log, Redis key or value, or store file.""",
)
def hostile_requests(ctx: DrillContext, obs: Observations) -> None:
    """Send every hostile case; check the status, the message and where the secret went."""
    from editing.fingerprint import find_secrets_in_dir

    ctx.secrets.append(HOSTILE_SECRET)
    bad: list[str] = []
    leaks: list[str] = []
    codes: dict[int, int] = {}
    cases = hostile_cases(ctx.key)
    with ctx.http(timeout=60) as http:
        for label, method, path, kwargs in cases:
            request = http.build_request(method, path, **kwargs)
            if request.headers.get("Authorization") == "":
                del request.headers["Authorization"]
            try:
                response = http.send(request)
            except httpx.HTTPError as exc:
                bad.append(f"{label}: {type(exc).__name__}")
                continue
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
            message = _message(response)
            if not (400 <= response.status_code < 500 and message):
                bad.append(f"{label}: HTTP {response.status_code} {message[:60]!r}")
            if HOSTILE_SECRET in response.text or HOSTILE_SECRET in str(response.headers):
                leaks.append(label)
    summary = ", ".join(f"{n}x{c}" for c, n in sorted(codes.items()))
    obs.check(
        not bad,
        f"{len(cases)} requests, every one a 4xx with a message ({summary})"
        + (f"; not: {bad[:6]}" if bad else ""),
    )
    obs.check(not any(c >= 500 for c in codes), "zero 5xx")
    obs.check(not leaks, f"the secret in no response ({leaks[:5]})")
    in_logs = HOSTILE_SECRET in ctx.s.log_text()
    audit = ctx.s.home / "audit"
    in_audit = audit.is_dir() and bool(find_secrets_in_dir(audit, [HOSTILE_SECRET]))
    obs.check(not in_logs and not in_audit, "the secret in no process log and not in the audit log")
    obs.check(not _in_redis(ctx, HOSTILE_SECRET), "the secret in no Redis key or value")
    obs.check(
        not find_secrets_in_dir(ctx.s.store_root, [HOSTILE_SECRET]),
        "the secret in no store file (no hostile request was accepted)",
    )


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text.strip()
    detail = doc.get("summary") or doc.get("detail") if isinstance(doc, dict) else doc
    return detail if isinstance(detail, str) else json.dumps(detail)


def _in_redis(ctx: DrillContext, secret: str) -> bool:
    """Whether ``secret`` is in any key or value of the stack's Redis (all types, db 0)."""
    import redis

    conn = redis.Redis.from_url(ctx.s.redis_url)
    needle = secret.encode()
    try:
        for key in conn.scan_iter(count=500):
            if needle in key:
                return True
            kind = conn.type(key)
            if kind == b"string":
                values = [conn.get(key) or b""]
            elif kind == b"hash":
                values = [b"".join(kv) for kv in conn.hgetall(key).items()]
            elif kind == b"list":
                values = conn.lrange(key, 0, -1)
            elif kind in (b"set",):
                values = list(conn.smembers(key))
            elif kind == b"zset":
                values = [m for m, _ in conn.zrange(key, 0, -1, withscores=True)]
            else:
                values = [conn.dump(key) or b""]
            if any(needle in v for v in values):
                return True
    finally:
        conn.close()
    return False
