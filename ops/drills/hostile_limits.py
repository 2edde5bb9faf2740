"""The hostile-limits drill: issue #15's capacity and protocol attacks, replayed over real HTTP.

One tenant floods its model's queue, holds event streams open, sends a 64 KB header, an infinite
threshold, malformed ``Last-Event-ID`` values and a forged ``Host``; each must be refused (or, for
the flood, must not delay another tenant). The worker is stopped meanwhile, so nothing runs and
the queue order can be read; every erasure made here is cancelled before the drill ends.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from ops.drills.base import DrillContext, Observations, drill
from ops.stack import DEMO_MODEL

FLOOD_TARGET = "501-555-0123"  # a fictional number; never produced by the demo model


def _body(subject: str = "Flood Person", **overrides: Any) -> dict[str, Any]:
    fact = {"subject": subject, "relation": "phone", "target": FLOOD_TARGET}
    return {"model": DEMO_MODEL, "facts": [fact], **overrides}


def _queue_order(ctx: DrillContext) -> list[str]:
    conn = redis.Redis.from_url(ctx.s.redis_url)
    try:
        return [i.decode() for i in conn.lrange(f"rq:queue:featureedit-{DEMO_MODEL}", 0, -1)]
    finally:
        conn.close()


@drill(
    "hostile-limits",
    """One tenant's flood of erasures stops at its in-flight cap (429 + Retry-After) and does not
    delay another tenant's single erasure (round-robin queue); event streams are capped per
    tenant; a 64 KB header gets 431 before authentication; an infinite threshold gets a 422 saying
    it must be finite; malformed Last-Event-ID values get 400; a forged Host header is not
    reflected into Location; the audit log records the client address.""",
)
def hostile_limits(ctx: DrillContext, obs: Observations) -> None:
    """Replay each attack (module docstring) and check it is refused."""
    if ctx.worker is not None and ctx.worker.poll() is None:
        ctx.s.stop(ctx.worker)  # nothing runs: the queue order is observable, no CPU spent
    ctx.secrets.append(FLOOD_TARGET)
    other_key = ctx.s.create_key("drill-other")
    with ctx.http() as http, ctx.http(other_key) as other:
        tenants = Tenants(http, other)
        try:
            _flood(ctx, obs, tenants)
            _protocol(ctx, obs, tenants)
        finally:
            for key, erasure_id in tenants.made:
                (http if key == "drill" else other).delete(f"/v1/erasures/{erasure_id}")
            ctx.ensure_worker()


@dataclass
class Tenants:
    """The drill's two tenants' clients and the erasures made (to cancel at the end)."""

    http: httpx.Client
    other: httpx.Client
    made: list[tuple[str, str]] = field(default_factory=list)


def _flood(ctx: DrillContext, obs: Observations, t: Tenants) -> None:
    http, other, made = t.http, t.other, t.made
    codes: list[int] = []
    refusal: httpx.Response | None = None
    for i in range(25):
        r = http.post("/v1/erasures", json=_body(f"Flood Person {i}"))
        codes.append(r.status_code)
        if r.status_code == 202:
            made.append(("drill", r.json()["id"]))
        elif refusal is None:
            refusal = r
    accepted = codes.count(202)
    obs.check(
        refusal is not None
        and refusal.status_code == 429
        and int(refusal.headers.get("retry-after", "0")) >= 1,
        f"flood of 25: {accepted} accepted, then "
        + (
            f"{refusal.status_code} Retry-After {refusal.headers.get('retry-after')}"
            if refusal is not None
            else "no refusal"
        ),
    )
    single = other.post("/v1/erasures", json=_body("Other Tenant Person"))
    if single.status_code == 202:
        made.append(("other", single.json()["id"]))
        order = _queue_order(ctx)
        position = order.index(single.json()["id"]) if single.json()["id"] in order else -1
        obs.check(
            0 <= position <= 1,
            f"another tenant's single erasure waits at position {position} of {len(order)}",
        )
    else:
        obs.check(False, f"the other tenant's erasure was refused: {single.status_code}")
    url = f"/v1/erasures/{made[0][1]}/events"
    with contextlib.ExitStack() as streams:
        opened = 0
        for _ in range(10):
            response = streams.enter_context(http.stream("GET", url, timeout=30))
            lines = response.iter_lines()
            streams.callback(lines.close)  # kept open: dropping the iterator ends the stream
            next(lines, None)  # the first event: the stream is being served
            opened += response.status_code == 200
        extra = http.get(url)
        obs.check(
            opened == 10 and extra.status_code == 429,
            f"{opened} event streams open, the next one: {extra.status_code}",
        )


def _protocol(ctx: DrillContext, obs: Observations, t: Tenants) -> None:
    http, other, made = t.http, t.other, t.made
    big = http.get("/v1/erasures", headers={"X-Pad": "a" * 65536, "Authorization": "Bearer x"})
    obs.check(big.status_code == 431, f"64 KB header before authentication: {big.status_code}")
    raw = json.dumps(_body(thresholds={"max_delta_ppl": "INF"})).replace('"INF"', "1e999")
    inf = http.post("/v1/erasures", content=raw, headers={"Content-Type": "application/json"})
    obs.check(
        inf.status_code == 422 and "finite" in inf.text,
        f"max_delta_ppl 1e999: {inf.status_code}",
    )
    erasure_id = made[0][1]
    bad = {
        value: http.get(
            f"/v1/erasures/{erasure_id}/events", headers={"Last-Event-ID": value.encode()}
        ).status_code
        for value in ("--1", "\u0661", "1e3", "+5")
    }
    obs.check(set(bad.values()) == {400}, f"malformed Last-Event-ID: {bad}")
    forged = other.post("/v1/erasures", json=_body("Host Person"), headers={"Host": "evil.example"})
    if forged.status_code == 202:
        made.append(("other", forged.json()["id"]))
    location = forged.headers.get("location", "")
    obs.check("evil.example" not in location, f"forged Host: Location {location or 'absent'}")
    lines = (ctx.s.home / "audit" / "audit.log").read_text().splitlines()
    clients = {json.loads(line).get("client") for line in lines[-20:]}
    obs.check(clients == {"127.0.0.1"}, f"audit lines carry the client address: {clients}")
