"""The response cache as the request path uses it: the in-process tier, then the shared one.

Lookup: this process's LRU first (no await when it answers or when there is no shared tier);
on a local miss, Redis — and a Redis hit is copied into the local tier with the age it has,
so it expires when it would have in Redis. Store: into the local tier at once, and into Redis
in the background (a task per store, tracked so `drain` can await them at shutdown), so
filling the cache never delays the end of an answer.

`render_hit` turns a hit into the body, content type and headers of the answer; the seam
`pipeline/cache.py` wraps them in a `web.Response`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from routeway_proxy.cache.control import CachePlan, CacheResult, cache_headers
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.memory import Hit, MemoryCaches
from routeway_proxy.cache.replay import replay

if TYPE_CHECKING:
    from routeway_proxy.cache.answers import StoredAnswer
    from routeway_proxy.cache.metrics import CacheMetrics
    from routeway_proxy.cache.redis_store import RedisStore


class ResponseCache:
    """One process's response cache: every cached route's local LRU, and the shared tier."""

    def __init__(
        self,
        memory: MemoryCaches | None = None,
        shared: RedisStore | None = None,
        metrics: CacheMetrics | None = None,
    ) -> None:
        self.memory = memory if memory is not None else MemoryCaches()
        self.shared = shared
        self.metrics = metrics
        self.pending: set[asyncio.Task[bool]] = set()
        # (route id, result) -> the bound child of `metrics.requests`: a `labels()` call costs
        # about 1 µs per request (tuple, lock, dict), the bound child's `inc` a third of that
        self._request_counters: dict[tuple[str, str], Any] = {}

    def configure(self, settings: Mapping[str, CacheSettings]) -> None:
        """A new config's cached routes (route id -> settings); others lose their entries."""
        metrics = self.metrics
        self._request_counters = {}  # children of routes no longer cached are not kept
        if metrics is None:
            self.memory.configure(settings)
            return
        self.memory.configure(settings, lambda route: metrics.bytes.labels(route).set)
        for route_id in list(self.memory.routes):
            metrics.bytes.labels(route_id).set(self.memory.routes[route_id].bytes)

    def settings(self, route_id: str) -> CacheSettings | None:
        cache = self.memory.get(route_id)
        return cache.settings if cache is not None else None

    async def lookup(self, route_id: str, plan: CachePlan) -> Hit | None:
        """The stored answer for the plan's key, or None (also when the plan bypasses)."""
        cache = self.memory.get(route_id)
        key = plan.key
        if cache is None or key is None or not plan.lookup:
            return None
        hit = cache.get(key)
        if hit is not None or self.shared is None:
            return hit
        hit = await self.shared.get(key)
        if hit is None or hit.age >= cache.settings.ttl:
            return None  # older than the route's TTL allows now (a pod with an older config stored it)
        cache.put(key, hit.answer, stored_at=cache.clock() - hit.age)
        return hit

    def store(self, route_id: str, plan: CachePlan, answer: StoredAnswer) -> bool:
        """Keep `answer` for the plan's key (locally now, shared in the background); False
        when the plan does not store or the local tier refused it (larger than its bound)."""
        cache = self.memory.get(route_id)
        key = plan.key
        if cache is None or key is None or not plan.store:
            return False
        stored = cache.put(key, answer)
        if self.shared is not None:
            task = asyncio.get_running_loop().create_task(self.shared.set(key, answer, cache.settings.ttl))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return stored

    def count(self, route_id: str, result: CacheResult, hit: Hit | None = None) -> None:
        """Count one answered request on a cached route (and the tokens a hit saved)."""
        metrics = self.metrics
        if metrics is None:
            return
        counter = self._request_counters.get((route_id, result))
        if counter is None:
            counter = self._request_counters[(route_id, result)] = metrics.requests.labels(route_id, result)
        counter.inc()
        if hit is not None:
            metrics.count_hit_tokens(route_id, hit.answer.prompt_tokens, hit.answer.completion_tokens)

    async def drain(self) -> None:
        """Wait for the shared-tier stores still under way (each is bounded by its timeout)."""
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)


def render_hit(hit: Hit, plan: CachePlan) -> tuple[bytes, str, dict[str, str]]:
    """Body, content type and cache headers of the answer to a request that hit."""
    body, content_type = replay(hit.answer, plan.stream, plan.include_usage)
    return body, content_type, cache_headers("hit", hit.age)
