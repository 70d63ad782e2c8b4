"""The shared tier against a real `redis-server` on loopback (`routeway_proxy.cache.redis_store`,
through `tiers.ResponseCache` as two gateway pods would use it).

Matrix: set then get (value, Age from the stored time, PX set from the TTL) · a foreign value
under the key is a miss · two pods share an answer, copied into the reader's local tier ·
Redis killed: get is a miss, set is a no-op, counted and paused (calls skipped, counted), and
after the pause a restarted Redis serves again · Redis frozen (SIGSTOP): a timeout, a miss ·
a store while Redis is down still fills the local tier.

"Quickly" is checked as "within a bound far above the tier's own timeout" (asyncio.wait_for
as a guard against a hang), never as a measured duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cache_helpers import FakeClock, capture_mock, chat_body
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis_server import RedisServer
from routeway_proxy.cache.answers import StoredAnswer, storable_answer
from routeway_proxy.cache.control import plan_request
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.memory import MemoryCaches
from routeway_proxy.cache.metrics import CacheMetrics
from routeway_proxy.cache.redis_store import KEY_PREFIX, RedisStore, make_redis_client
from routeway_proxy.cache.tiers import ResponseCache

HANG_GUARD = 10.0  # seconds: only a hang reaches it
KEY = "k" * 64
ANSWER = StoredAnswer("chat", b'{"id":"x","object":"chat.completion","choices":[]}', 3, 4)


class Tier:
    """A RedisStore with fake clocks and its own metrics."""

    def __init__(self, url: str, timeout: float = 0.2) -> None:
        self.registry = CollectorRegistry()
        self.metrics = CacheMetrics(self.registry)
        self.wall = FakeClock(1_700_000_000.0)
        self.monotonic = FakeClock(50.0)
        self.store = RedisStore(
            make_redis_client(url, timeout=timeout),
            timeout=timeout,
            pause=5.0,
            metrics=self.metrics,
            wall=self.wall,
            monotonic=self.monotonic,
        )

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def tier(redis_rig: RedisServer) -> AsyncIterator[Tier]:
    shared = Tier(redis_rig.url)
    try:
        yield shared
    finally:
        redis_rig.resume()
        await shared.store.close()


@pytest.fixture
async def raw_redis(redis_rig: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_rig.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_set_then_get_with_age_and_px(tier: Tier, raw_redis: Redis) -> None:
    assert await tier.store.set(KEY, ANSWER, ttl=30)
    ttl_ms = await raw_redis.pttl(KEY_PREFIX + KEY)
    assert 0 < ttl_ms <= 30_000
    tier.wall.advance(7)
    hit = await tier.store.get(KEY)
    assert hit is not None and hit.answer == ANSWER and hit.age == 7
    assert await tier.store.get("other" * 13) is None
    assert not await tier.store.set(KEY, ANSWER, ttl=0)  # no life: nothing sent
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="error") == 0


async def test_a_foreign_value_is_a_miss(tier: Tier, raw_redis: Redis) -> None:
    await raw_redis.set(KEY_PREFIX + KEY, b"something else")
    assert await tier.store.get(KEY) is None
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="error") == 0


async def test_two_pods_share_an_answer(redis_rig: RedisServer) -> None:
    settings = CacheSettings(ttl=60, max_bytes=1 << 20, scope="Route")
    pods = []
    for _ in range(2):
        clock = FakeClock(1_700_000_000.0)
        store = RedisStore(make_redis_client(redis_rig.url), wall=clock)
        cache = ResponseCache(MemoryCaches(clock), shared=store)
        cache.configure({"r": settings})
        pods.append((cache, clock))
    (writer, _), (reader, reader_clock) = pods
    status, raw = await capture_mock("chat", chat_body())
    answer = storable_answer("chat", status, raw)
    assert answer is not None
    plan = plan_request(settings, "r", "chat", chat_body(), "default/a", None)
    assert writer.store("r", plan, answer)
    await writer.drain()
    reader_clock.advance(20)
    hit = await reader.lookup("r", plan)
    assert hit is not None and hit.answer == answer and hit.age == 20
    local = reader.memory.get("r")
    assert local is not None and plan.key in local  # copied into the reader's own tier
    reader_clock.advance(40)  # 60 s after it was stored: expired locally too
    assert local.get(plan.key or "") is None
    for cache, _ in pods:
        assert cache.shared is not None
        await cache.shared.close()


async def test_redis_killed_is_a_quick_miss_then_a_pause(tier: Tier, redis_rig: RedisServer) -> None:
    assert await tier.store.set(KEY, ANSWER, ttl=30)
    redis_rig.kill()
    assert await asyncio.wait_for(tier.store.get(KEY), HANG_GUARD) is None
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="error") == 1
    # paused: nothing is tried, every call is a miss or a no-op at once
    assert await tier.store.get(KEY) is None
    assert not await tier.store.set(KEY, ANSWER, ttl=30)
    assert tier.count("routeway_cache_redis_skipped_total", op="get") == 1
    assert tier.count("routeway_cache_redis_skipped_total", op="set") == 1
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="error") == 1
    # after the pause, a Redis back on its port serves again
    redis_rig.start()
    tier.monotonic.advance(5.0)
    assert await asyncio.wait_for(tier.store.set(KEY, ANSWER, ttl=30), HANG_GUARD)
    hit = await tier.store.get(KEY)
    assert hit is not None and hit.answer == ANSWER
    assert not tier.store.failing


async def test_redis_frozen_is_a_timeout_and_a_miss(tier: Tier, redis_rig: RedisServer) -> None:
    assert await tier.store.set(KEY, ANSWER, ttl=30)
    redis_rig.pause()
    assert await asyncio.wait_for(tier.store.get(KEY), HANG_GUARD) is None
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="timeout") == 1
    redis_rig.resume()


async def test_a_store_while_redis_is_down_fills_the_local_tier(redis_rig: RedisServer) -> None:
    settings = CacheSettings(ttl=60, max_bytes=1 << 20)
    tier = Tier(redis_rig.url)
    cache = ResponseCache(MemoryCaches(FakeClock()), shared=tier.store, metrics=tier.metrics)
    cache.configure({"r": settings})
    plan = plan_request(settings, "r", "chat", chat_body(), None, None)
    redis_rig.kill()
    other = plan_request(settings, "r", "chat", chat_body("another question"), None, None)
    assert await asyncio.wait_for(cache.lookup("r", other), HANG_GUARD) is None  # local miss, Redis fails
    assert cache.store("r", plan, ANSWER)
    await asyncio.wait_for(cache.drain(), HANG_GUARD)
    hit = await cache.lookup("r", plan)
    assert hit is not None and hit.answer == ANSWER
    assert tier.count("routeway_cache_redis_errors_total", op="get", reason="error") == 1
    await tier.store.close()
