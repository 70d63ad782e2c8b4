"""The store of many pods: budgets in Redis, reserved and settled by atomic Lua scripts.

Why scripts: a gateway's pods reserve the same budgets at the same moments; a read in one
round trip and a write in the next would let two pods both take the last of a budget. A
script runs alone on the server, so the read, the decision and the write of every demand of
a request are one atomic step, as under the shared table's lock. The scripts are
`budget.py`'s rules in Lua (same formulas, same comparisons): the reserve script returns
whether it admitted and each budget's use before the request, and Python rebuilds the same
`Decision` from those with `budget.decide`, so headers and retry-after come from one code path.
Numbers cross as `%.17g` strings, which round-trip doubles exactly.

The time is the Redis server's (`TIME`), one clock for every pod whatever their skew; a test
passes its fake clock's time instead. Keys expire once their budget is full again (per-minute)
or after the UTC day (per-day), so Redis holds only budgets in use.

A peek (the budgets of a request refused before the limit stage) is a third, read-only
script: the same `used_at` over `HMGET`, no write, bounded by the same timeout.

Calls are `EVALSHA`, falling back to `EVAL` (which also caches the script) when the server
answers `NOSCRIPT` (a restart, `SCRIPT FLUSH`, a failover). Every call is bounded by
`timeout` and is never retried by the client (a retried reserve could reserve twice): a slow
or unreachable Redis becomes `StoreUnavailable` within the timeout, and the limiter's failure
mode decides (`limiter.py`).

Keys: `{prefix}{kind}:{key}`; the default prefix holds a hash tag so a request's keys live in
one Redis Cluster slot, as a multi-key script requires.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routeway_proxy import redis_client
from routeway_proxy.limits.budget import Charge, Decision, Demand, decide, peek
from routeway_proxy.limits.local import Clock, StoreUnavailable

DEFAULT_TIMEOUT = 0.25  # seconds; the request path waits no longer for a decision
DEFAULT_PREFIX = "routeway:{limits}:"
RECORD_TTL_MS = 3_600_000
"""How long a reservation's record waits for its settlement: longer than any request runs.
A record outliving it (its process died mid-request) stands as charged, as in every store."""
TOMBSTONE_TTL_MS = 600_000
"""How long a released or settled-unseen reservation stays refused: longer than any call can
wait in a socket or a paused server before it runs."""

_COMMON = """
local DAY = 86400
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function used_at(kind, limit, used, updated)
  if used == 0 then return 0 end
  if kind == 3 then
    if math.floor(updated / DAY) >= math.floor(now / DAY) then return used end
    return 0
  end
  local elapsed = now - updated
  if elapsed <= 0 then return used end
  return math.max(0, used - elapsed * limit / 60)
end
local function store(key, kind, limit, used, updated)
  redis.call('HSET', key, 'u', string.format('%.17g', used), 't', string.format('%.17g', updated))
  local ttl
  if kind == 3 then
    ttl = ((math.floor(now / DAY) + 1) * DAY - now + 1) * 1000
  else
    ttl = (used * 60 / limit + 1) * 1000
  end
  redis.call('PEXPIRE', key, math.ceil(ttl))
end
"""

RESERVE = (
    _COMMON
    + """
local n = #KEYS
local record = nil
if ARGV[2] ~= '' then
  n = n - 1
  record = KEYS[#KEYS]
  if redis.call('EXISTS', record) == 1 then return {-1} end
end
local used, updated = {}, {}
local admitted = 1
for i = 1, n do
  local kind, limit, amount = tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2])
  local stored = redis.call('HMGET', KEYS[i], 'u', 't')
  updated[i] = tonumber(stored[2]) or 0
  used[i] = used_at(kind, limit, tonumber(stored[1]) or 0, updated[i])
  if amount > 0 and (amount > limit or used[i] + amount - limit > 0) then admitted = 0 end
end
local answer = {admitted, string.format('%.17g', now)}
for i = 1, n do
  answer[i + 2] = string.format('%.17g', used[i])
  if admitted == 1 then
    local kind, limit, amount = tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2])
    store(KEYS[i], kind, limit, used[i] + amount, math.max(now, updated[i]))
  end
end
if record and admitted == 1 then
  redis.call('SET', record, string.format('%.17g', now), 'PX', ARGV[2])
end
return answer
"""
)
"""ARGV: now ('' for the server's TIME), the record's TTL in ms ('' for no record), then
(kind, limit, amount) per budget key; KEYS: the budget keys, then the record's key when there
is one. A record that exists already (`x`: released before this call arrived) refuses to
reserve anything and answers {-1}."""

SETTLE = (
    _COMMON
    + """
local n = #KEYS
local at = nil
if ARGV[2] ~= '' then
  n = n - 1
  local record = KEYS[#KEYS]
  local held = redis.call('GET', record)
  if not held then
    redis.call('SET', record, 'x', 'PX', ARGV[2])
    return 0
  end
  if held == 'x' then return 0 end
  at = tonumber(held)
  redis.call('DEL', record)
end
for i = 1, n do
  local kind, limit, delta = tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i]), tonumber(ARGV[4*i+1])
  local reserved_at = at or tonumber(ARGV[4*i+2])
  if kind == 3 and delta < 0 and math.floor(reserved_at / DAY) < math.floor(now / DAY) then delta = 0 end
  if delta ~= 0 then
    local stored = redis.call('HMGET', KEYS[i], 'u', 't')
    local updated = tonumber(stored[2]) or 0
    local used = used_at(kind, limit, tonumber(stored[1]) or 0, updated)
    store(KEYS[i], kind, limit, math.max(0, used + delta), math.max(now, updated))
  end
end
return 1
"""
)
"""Settle or release. ARGV: now, the tombstone's TTL in ms ('' for no record: apply the
charges as given), then (kind, limit, delta, reserved_at) per budget key; KEYS: the budget
keys, then the record's key when there is one. With a record the charges apply only if the
record holds a reservation (its time replaces `reserved_at`), and the record is deleted; a
missing record becomes a tombstone `x` so that a reservation still on its way is refused when
it arrives; a tombstone applies nothing. So a settlement or release can be sent again safely,
and in any order with the reservation it undoes."""

PEEK = (
    _COMMON
    + """
local answer = {string.format('%.17g', now)}
for i = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[i], 'u', 't')
  answer[i + 1] = string.format('%.17g', used_at(tonumber(ARGV[i+1]), tonumber(ARGV[#KEYS+i+1]),
    tonumber(stored[1]) or 0, tonumber(stored[2]) or 0))
end
return answer
"""
)
"""Read-only: each budget's use refilled to now, and now; it writes no key (no `HSET`, no
`PEXPIRE`), so a peek never changes a budget or its expiry."""


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: Redis, keys: Sequence[str], args: Sequence[str]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)  # type: ignore[misc]


_RESERVE = _Script(RESERVE)
_SETTLE = _Script(SETTLE)
_PEEK = _Script(PEEK)


def connect(url: str, password: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """A client for `spec.limits.redis.url` (routeway_proxy.redis_client): every step bounded by
    `timeout`, no retries of its own (a retried reserve could reserve twice)."""
    return redis_client.connect(url, password, timeout)


class RedisStore:
    """Budgets in one Redis, shared by every pod that uses the same `url` and `prefix`."""

    keeps_records = True

    def __init__(
        self,
        client: Redis,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._clock = clock  # None: the server's TIME

    def _key(self, key: str, kind: int) -> str:
        return f"{self._prefix}{kind}:{key}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    async def _run(self, script: _Script, keys: list[str], args: list[str]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await script.run(self._client, keys, args)
        except (TimeoutError, RedisTimeoutError) as exc:  # the store's bound, or the socket's
            # sent, maybe run, no answer: only a record can tell later what happened
            raise StoreUnavailable(f"redis: {type(exc).__name__}", maybe_applied=True) from exc
        except (RedisError, OSError) as exc:
            # refused, reset or closed: a server that failed mid-call lost what it held anyway
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc

    async def reserve(self, demands: Sequence[Demand], record: str = "") -> Decision:
        keys = [self._key(d.key, d.kind) for d in demands]
        args = [self._now(), str(RECORD_TTL_MS) if record else ""]
        for d in demands:
            args += (str(d.kind.value), str(d.limit), str(d.amount))
        if record:
            keys.append(self._record_key(record))
        answer = await self._run(_RESERVE, keys, args)
        if int(answer[0]) < 0:  # released before it arrived: only a late call sees this
            raise StoreUnavailable("redis: the reservation was released before it was made")
        now = float(answer[1])
        states = [(float(used), now) for used in answer[2:]]
        decision, _ = decide(demands, states, now)
        if decision.admitted != bool(answer[0]):  # cannot happen: the same comparisons on the same doubles
            raise StoreUnavailable("redis and the gateway disagree on a decision")
        return decision

    async def peek(self, demands: Sequence[Demand]) -> Decision:
        keys = [self._key(d.key, d.kind) for d in demands]
        args = [self._now(), *(str(d.kind.value) for d in demands), *(str(d.limit) for d in demands)]
        answer = await self._run(_PEEK, keys, args)
        now = float(answer[0])
        # the use is refilled to `now` already: `budget.peek` refills nothing more at the same time
        return peek(demands, [(float(used), now) for used in answer[1:]], now)

    async def settle(self, charges: Sequence[Charge], record: str = "") -> None:
        """Apply `charges`; with `record`, only if that reservation is still held (once)."""
        keys = [self._key(c.key, c.kind) for c in charges]
        args = [self._now(), str(TOMBSTONE_TTL_MS) if record else ""]
        for c in charges:
            args += (str(c.kind.value), str(c.limit), repr(float(c.delta)), repr(float(c.reserved_at)))
        if record:
            keys.append(self._record_key(record))
        await self._run(_SETTLE, keys, args)

    async def release(self, demands: Sequence[Demand], record: str) -> None:
        """Give back everything `record` reserved (its request and tokens), if it did and was
        not settled or released yet; else make sure it never will (a tombstone)."""
        await self.settle([Charge(d.key, d.kind, d.limit, -float(d.amount), 0.0) for d in demands], record)

    def _record_key(self, record: str) -> str:
        return f"{self._prefix}r:{record}"

    async def close(self) -> None:
        await self._client.aclose()
