"""The response cache of one proxy process, kept in step with the config it serves.

`GatewayCache.apply` runs inside `ProxyRuntime.apply`, so a routing table and the caches of
its routes change together:

- every route with `cache` gets its in-process LRU (`memory.MemoryCaches`), bounded by its
  `maxBytes`; a route whose cache settings change starts empty, one that loses its cache or
  disappears is dropped (its bytes gauge goes to 0);
- `gateway.limits.redisUrl` set: the shared tier (`redis_store.RedisStore`) on that Redis, its
  password the credential `redisPasswordRef` names (resolved like a backend's credential,
  never in the config). A changed URL or password replaces the client; the old one is closed
  in the background. No URL: this process caches alone.

Keys are namespaced per route *and* per cache settings (`namespace`): an entry another pod
shared in Redis under a route's old settings is never found under its new ones, so "emptied
when its settings change" holds for the shared tier too, without deleting anything in Redis
(its entries end by their own TTL).

Why a class of its own rather than more of `ProxyRuntime`: the runtime swaps tables; this
owns I/O resources (the Redis client) that outlive tables and need closing at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from routeway.proxyconfig import CacheConfig, ProxyConfig
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.metrics import CacheMetrics
from routeway_proxy.cache.redis_store import RedisStore, make_redis_client
from routeway_proxy.cache.tiers import ResponseCache

log = logging.getLogger("routeway.proxy")


def cache_settings(config: CacheConfig) -> CacheSettings:
    return CacheSettings(ttl=config.ttl, max_bytes=config.max_bytes, scope=config.scope)


def key_namespace(route_id: str, settings: CacheSettings) -> str:
    """The route part of a cache key: the route id and its cache settings."""
    return f"{route_id}|{settings.ttl:g}|{settings.max_bytes}|{settings.scope}"


class GatewayCache:
    """The response cache of one process, reconfigured on each applied config."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = CacheMetrics(registry)
        self.cache = ResponseCache(metrics=self.metrics)
        self.namespaces: dict[str, str] = {}  # route id -> key namespace, for the cached routes
        self._redis_identity: tuple[str, str | None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def apply(self, config: ProxyConfig, credentials: Mapping[str, str]) -> None:
        """Serve `config`'s caches from now on (see the module docstring)."""
        settings = {r.id: cache_settings(r.cache) for r in config.routes if r.cache is not None}
        self.cache.configure(settings)
        self.namespaces = {route_id: key_namespace(route_id, s) for route_id, s in settings.items()}
        limits = config.gateway.limits
        identity = None
        if limits.redis_url and settings:
            password = None
            if limits.redis_password_ref:
                password = credentials.get(limits.redis_password_ref)
                if password is None:
                    log.warning(
                        "cache: the Redis password %s is not available; connecting without one",
                        limits.redis_password_ref,
                    )
            identity = (limits.redis_url, password)
        if identity == self._redis_identity:
            return
        self._redis_identity = identity
        old = self.cache.shared
        self.cache.shared = None
        if identity is not None:
            client = make_redis_client(identity[0], identity[1])
            self.cache.shared = RedisStore(client, metrics=self.metrics)
        if old is not None:
            self._close_later(old)

    def _close_later(self, store: RedisStore) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside a loop (a test, a tool): nothing was connected
            return
        task = loop.create_task(store.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """At shutdown: finish the shared-tier stores under way, close the Redis client."""
        await self.cache.drain()
        shared = self.cache.shared
        self.cache.shared = None
        self._redis_identity = None
        if shared is not None:
            await shared.close()
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
