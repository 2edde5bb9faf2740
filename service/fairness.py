"""Fair sharing between tenants: per-tenant quotas and round-robin order within a model's queue.

* :func:`place_fairly` moves a just-enqueued job to its tenant's *round* in the rq queue list: the
  list is kept as round 0 of every tenant (in arrival order), then round 1, and so on, so a
  tenant's k-th waiting job runs after every other tenant's first k jobs. One tenant's 50 queued
  jobs delay another tenant's single job by at most one job, not 50. Which tenant each waiting
  job belongs to is a Redis hash next to the queue (``<prefix>:fair:<queue>``; job id -> tenant,
  no secret); ids no longer waiting are pruned from it as it grows.
* :class:`TenantQuota` caps what one tenant holds at once: erasures queued or running and facts
  in them (a Redis hash of the tenant's in-flight erasure ids -> fact counts, checked and added
  atomically; ids whose record has ended are dropped before each check), and open event streams
  (a sorted set of stream tokens scored by expiry, so a crashed API process's streams lapse).

Both fail open when Redis is unreachable, like the rate limiter: the enqueue then fails anyway,
and an event stream is served from the store.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1] rq queue list, KEYS[2] job id -> tenant hash; ARGV[1] job id, ARGV[2] tenant.
# Returns the job's index in the list, or -1 if a worker took it before it could be placed.
_PLACE_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local owners = {}
local mine = 0
for i, id in ipairs(ids) do
  local t = redis.call('HGET', KEYS[2], id)
  if not t then t = '\\0' .. id end
  owners[i] = t
  if t == ARGV[2] then mine = mine + 1 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[2]) > #ids + 64 then
  local waiting = {}
  for _, id in ipairs(ids) do waiting[id] = true end
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
    if id ~= ARGV[1] and not waiting[id] then redis.call('HDEL', KEYS[2], id) end
  end
end
local rounds = {}
for i, id in ipairs(ids) do
  local r = rounds[owners[i]] or 0
  rounds[owners[i]] = r + 1
  if r > mine then
    redis.call('LINSERT', KEYS[1], 'BEFORE', id, ARGV[1])
    return i - 1
  end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return #ids
"""

# KEYS[1] the tenant's in-flight hash (erasure id -> "<facts>|<reserved at>"); ARGV: id, facts,
# max jobs, max facts, now. Returns 0 if reserved, 1 if the job limit, 2 if the facts limit
# refuses it.
_RESERVE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local held = redis.call('HVALS', KEYS[1])
if #held + 1 > tonumber(ARGV[3]) then return 1 end
local facts = tonumber(ARGV[2])
for _, v in ipairs(held) do facts = facts + tonumber(string.match(v, '^(%d+)')) end
if facts > tonumber(ARGV[4]) then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[5])
return 0
"""
# A reservation whose record never appeared (the API process died in between) lapses after this.
ORPHAN_SECONDS = 120.0

# KEYS[1] the tenant's stream set; ARGV: token, now, expiry, limit. 1 if opened, 0 if refused.
_OPEN_STREAM_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) - tonumber(ARGV[2])) + 1)
return 1
"""


def fair_tally_key(prefix: str, queue_name: str) -> str:
    """The Redis hash of ``queue_name``'s waiting jobs' tenants."""
    return f"{prefix}:fair:{queue_name}"


def place_fairly(redis: Redis, queue_key: str, tally_key: str, job_id: str, tenant: str) -> int:
    """Move the queued ``job_id`` to its tenant's round in the list ``queue_key`` (module doc).

    Returns its index (0 = next to run), or -1 if a worker had already taken it. Raises
    RedisError when Redis fails.
    """
    return int(redis.eval(_PLACE_LUA, 2, queue_key, tally_key, job_id, tenant))


@dataclass(frozen=True)
class QuotaRefusal:
    """Why a tenant's request exceeds its quota, and when to retry."""

    detail: str
    retry_after: int


class TenantQuota:
    """Per-tenant caps on erasures in flight, facts in them and open event streams (module doc)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        max_jobs: int,
        max_facts: int,
        max_streams: int,
        stream_seconds: float,
        retry_after: int,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_jobs = max_jobs
        self.max_facts = max_facts
        self.max_streams = max_streams
        self.stream_seconds = stream_seconds
        self.retry_after = retry_after

    def _jobs_key(self, tenant: str) -> str:
        return f"{self.prefix}:inflight:{tenant}"

    def _streams_key(self, tenant: str) -> str:
        return f"{self.prefix}:streams:{tenant}"

    def reserve_erasure(
        self, tenant: str, erasure_id: str, facts: int, ended: Callable[[str], bool | None]
    ) -> QuotaRefusal | None:
        """Count ``erasure_id`` (with ``facts`` facts) against ``tenant``'s quota; None if it
        fits, else why not. ``ended(id)`` says whether a held erasure has finished (True), is
        still queued or running (False) or has no record (None: being created, or orphaned if
        older than :data:`ORPHAN_SECONDS`); finished and orphaned ones are dropped first."""
        key = self._jobs_key(tenant)
        now = time.time()
        try:
            held = {k.decode(): v.decode() for k, v in self.redis.hgetall(key).items()}
            done = [i for i, v in held.items() if _lapsed(ended(i), v, now)]
            if done:
                self.redis.hdel(key, *done)
            code = int(
                self.redis.eval(
                    _RESERVE_LUA, 1, key, erasure_id, facts, self.max_jobs, self.max_facts, now
                )
            )
        except RedisError as exc:
            log.warning("tenant quota unavailable, allowing request", extra={"error": str(exc)})
            return None
        if code == 1:
            return QuotaRefusal(
                f"Too many erasures in flight: at most {self.max_jobs} queued or running per "
                f"tenant; retry when one has finished (after {self.retry_after} s)",
                self.retry_after,
            )
        if code == 2:
            return QuotaRefusal(
                f"Too many facts in flight: at most {self.max_facts} facts in queued or running "
                f"erasures per tenant; retry when one has finished (after {self.retry_after} s)",
                self.retry_after,
            )
        return None

    def release_erasure(self, tenant: str, erasure_id: str) -> None:
        """Stop counting ``erasure_id`` (idempotent; Redis errors are logged)."""
        try:
            self.redis.hdel(self._jobs_key(tenant), erasure_id)
        except RedisError as exc:
            log.warning("cannot release a tenant quota slot", extra={"error": str(exc)})

    def open_stream(self, tenant: str) -> tuple[str | None, QuotaRefusal | None]:
        """``(token, None)`` if ``tenant`` may open one more event stream (close it with
        :meth:`close_stream`), ``(None, refusal)`` if not; ``(None, None)`` if Redis is down."""
        token = secrets.token_hex(8)
        now = time.time()
        expiry = now + self.stream_seconds + 30  # lapses even if close_stream never runs
        try:
            opened = self.redis.eval(
                _OPEN_STREAM_LUA, 1, self._streams_key(tenant), token, now, expiry, self.max_streams
            )
        except RedisError as exc:
            log.warning("stream quota unavailable, allowing stream", extra={"error": str(exc)})
            return None, None
        if int(opened):
            return token, None
        retry = max(1, min(self.retry_after, int(self.stream_seconds)))
        return None, QuotaRefusal(
            f"Too many open event streams: at most {self.max_streams} per tenant; close one or "
            f"retry after {retry} s",
            retry,
        )

    def close_stream(self, tenant: str, token: str) -> None:
        """Forget an open stream (idempotent; Redis errors are logged)."""
        try:
            self.redis.zrem(self._streams_key(tenant), token)
        except RedisError as exc:
            log.warning("cannot release a stream slot", extra={"error": str(exc)})


def _lapsed(ended: bool | None, value: str, now: float) -> bool:
    """Whether a held reservation no longer counts (its erasure ended, or it is an orphan)."""
    if ended is not None:
        return ended
    try:
        reserved_at = float(value.split("|", 1)[1])
    except (IndexError, ValueError):
        return True
    return now - reserved_at > ORPHAN_SECONDS
