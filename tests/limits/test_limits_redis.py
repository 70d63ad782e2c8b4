"""The Redis store beyond the shared scenarios: pods, script caching, the server's clock, and
Redis failing — each against a real redis-server on 127.0.0.1.

Matrix: two pods (independent clients) share one budget exactly; a flushed script cache
(NOSCRIPT) falls back to EVAL; without a test clock the server's TIME is used and keys expire;
Redis killed → FailOpen admits and FailClosed refuses with 503, each counted in
`routeway_ratelimit_store_failures_total` and logged once per interval; Redis stopped
(SIGSTOP, a hung server) → the call gives up at its timeout instead of hanging; a settlement
that fails is counted and keeps the reservation; a peek writes no key and renews no TTL, and
fails (hung or dead Redis) to no headers within the timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import pytest
from limits_helpers import FakeClock
from prometheus_client import CollectorRegistry
from redis_server import RedisServer
from routeway_proxy.limits.answer import rejection_error
from routeway_proxy.limits.budget import Demand, LimitKind
from routeway_proxy.limits.limiter import FailureMode, Limiter, Limits, Subject
from routeway_proxy.limits.metrics import LimitMetrics
from routeway_proxy.limits.redis_store import RESERVE, RedisStore, connect
from routeway_proxy.limits.shared import StoreUnavailable

TEAM = Subject("client", "default/search-team", Limits(requests_per_minute=10, tokens_per_minute=5000))
SAFETY = 30.0  # an outer bound so a hang fails the test instead of the run; not a timing claim


def failures(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value(
        "routeway_ratelimit_store_failures_total", {"store": "redis", "outcome": outcome}
    )
    return value or 0.0


async def test_two_pods_share_one_budget(redis_server: RedisServer, clock: FakeClock) -> None:
    pods = [Limiter(RedisStore(connect(redis_server.url), clock=clock), "redis") for _ in range(2)]

    async def burst(limiter: Limiter) -> int:
        admissions = await asyncio.gather(*(limiter.reserve([TEAM], 1000) for _ in range(10)))
        return sum(a.admitted for a in admissions)

    counts = await asyncio.gather(*(burst(pod) for pod in pods))
    assert sum(counts) == 5  # 5,000 tokens, 1,000 each, over both pods together
    for pod in pods:
        await pod.store.close()


async def test_flushed_script_cache_falls_back_to_eval(redis_server: RedisServer, clock: FakeClock) -> None:
    client = connect(redis_server.url)
    store = RedisStore(client, clock=clock)
    demand = Demand("client:a", LimitKind.REQUESTS_PER_MINUTE, 2, 1)
    assert (await store.reserve([demand])).admitted
    await client.script_flush()
    assert (await store.reserve([demand])).admitted  # NOSCRIPT → EVAL
    assert not (await store.reserve([demand])).admitted  # and the state survived
    assert (await client.script_exists(hashlib.sha1(RESERVE.encode()).hexdigest())) == [True]
    await store.close()


async def test_server_time_and_expiry(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    store = RedisStore(client, prefix="t:")  # no test clock: Redis's TIME
    demand = Demand("client:a", LimitKind.TOKENS_PER_MINUTE, 6000, 3000)
    first = await store.reserve([demand])
    assert first.admitted and first.budgets[0].remaining == 3000
    assert (await store.reserve([demand])).admitted
    refused = await store.reserve([demand])
    assert not refused.admitted and refused.retry_after > 0
    ttl = await client.pttl(f"t:{LimitKind.TOKENS_PER_MINUTE.value}:client:a")
    assert 0 < ttl <= 61_000  # a full bucket's key is gone within its refill time
    await store.close()


@pytest.mark.parametrize("mode", [FailureMode.FAIL_OPEN, FailureMode.FAIL_CLOSED])
async def test_redis_killed(
    redis_server: RedisServer, clock: FakeClock, mode: FailureMode, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    monotonic = FakeClock(0.0)
    limiter = Limiter(
        RedisStore(connect(redis_server.url), clock=clock),
        "redis",
        on_failure=mode,
        metrics=LimitMetrics(registry),
        monotonic=monotonic,
    )
    assert (await limiter.reserve([TEAM], 100)).admitted
    redis_server.kill()
    caplog.set_level(logging.WARNING, "routeway.proxy.limits")
    admissions = [await asyncio.wait_for(limiter.reserve([TEAM], 100), SAFETY) for _ in range(3)]
    admitted = mode is FailureMode.FAIL_OPEN
    assert [a.admitted for a in admissions] == [admitted] * 3
    assert all(a.unavailable and a.headers == {} for a in admissions)
    outcome = "admitted" if admitted else "rejected"
    assert failures(registry, outcome) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 failure(s)" in lines[0]  # one line per interval, not per request
    monotonic.advance(10.0)
    await limiter.reserve([TEAM], 100)
    assert len(caplog.records) == 2 and "3 failure(s)" in caplog.records[1].getMessage()
    if not admitted:
        error = rejection_error(admissions[0])
        assert (error.status, error.code, error.headers) == (
            503,
            "rate_limit_unavailable",
            {"Retry-After": "1"},
        )
    await limiter.store.close()


async def test_hung_redis_times_out(redis_server: RedisServer, clock: FakeClock) -> None:
    # the client's own socket timeout is long: the store's bound must hold by itself
    store = RedisStore(connect(redis_server.url, timeout=60.0), timeout=0.2, clock=clock)
    demand = Demand("client:a", LimitKind.REQUESTS_PER_MINUTE, 10, 1)
    assert (await store.reserve([demand])).admitted
    redis_server.pause()
    try:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.reserve([demand]), 5.0)
    finally:
        redis_server.resume()
    await store.close()


async def test_failed_settlement_is_counted(redis_server: RedisServer, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    limiter = Limiter(
        RedisStore(connect(redis_server.url), clock=clock), "redis", metrics=LimitMetrics(registry)
    )
    admission = await limiter.reserve([TEAM], 1000)
    redis_server.kill()
    await asyncio.wait_for(limiter.settle(admission.ticket, 10), SAFETY)
    assert failures(registry, "unsettled") == 1
    await limiter.store.close()


async def test_rejections_and_remaining_metrics(redis_server: RedisServer, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    limiter = Limiter(
        RedisStore(connect(redis_server.url), clock=clock), "redis", metrics=LimitMetrics(registry)
    )
    route = Subject("route", "default/chat", Limits(tokens_per_minute=1500))
    assert (await limiter.reserve([TEAM, route], 1000)).admitted
    assert not (await limiter.reserve([TEAM, route], 1000)).admitted
    sample = registry.get_sample_value
    assert (
        sample(
            "routeway_ratelimit_rejections_total",
            {"client": "default/search-team", "route": "default/chat", "limit": "tokensPerMinute"},
        )
        == 1
    )
    assert (
        sample(
            "routeway_ratelimit_remaining",
            {"client": "", "route": "default/chat", "limit": "tokensPerMinute"},
        )
        == 500
    )
    assert (
        sample(
            "routeway_ratelimit_remaining",
            {"client": "default/search-team", "route": "", "limit": "requestsPerMinute"},
        )
        == 9
    )
    await limiter.store.close()


async def test_peek_writes_nothing_and_fails_to_no_headers(
    redis_server: RedisServer, clock: FakeClock
) -> None:
    """The read-only peek script: no key for a budget never used, the TTL of a used one
    untouched; a hung Redis gives up at the store's timeout, a dead one at once, both as no
    headers (counted `unread`), never an error."""
    client = connect(redis_server.url)
    registry = CollectorRegistry()
    store = RedisStore(client, prefix="p:", timeout=0.2)  # the server's TIME: TTLs move
    limiter = Limiter(store, "redis", metrics=LimitMetrics(registry))
    assert (await limiter.peek([TEAM]))["x-ratelimit-remaining-tokens"] == "5000"
    assert await client.keys("p:*") == []
    assert (await limiter.reserve([TEAM], 3000)).admitted
    key = f"p:{LimitKind.TOKENS_PER_MINUTE.value}:{TEAM.key}"
    state = await client.hgetall(key)
    ttl = await client.pttl(key)
    await asyncio.sleep(0.05)
    for _ in range(5):
        headers = await limiter.peek([TEAM])
        assert int(headers["x-ratelimit-remaining-tokens"]) >= 2000
        assert headers["x-ratelimit-remaining-requests"] == "9"
    assert await client.hgetall(key) == state
    assert await client.pttl(key) <= ttl - 40  # not renewed by the peeks
    redis_server.pause()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        assert await asyncio.wait_for(limiter.peek([TEAM]), SAFETY) == {}
    finally:
        redis_server.resume()
    assert loop.time() - started < 2.0  # the store's 0.2 s bound, with room for a slow machine
    assert failures(registry, "unread") == 1
    redis_server.kill()
    assert await asyncio.wait_for(limiter.peek([TEAM]), SAFETY) == {}
    assert failures(registry, "unread") == 2
    await store.close()
