"""The response cache's metric families, ready to register in the proxy's registry.

`configure.GatewayCache` registers `CacheMetrics(registry)` in the registry of the process's
`ProxyMetrics` (in a worker group, the workers' files are read by the supervisor's `/metrics`).

Labels stay bounded: `route` is a route id of the applied config, `result` is
hit|miss|bypass, `type` prompt|completion, `op` get|set, `reason` timeout|error.

- `routeway_cache_requests_total{route, result}` — requests on cached routes, by result;
  the hit ratio is `hit / (hit + miss)` (bypasses were never looked up).
- `routeway_cache_bytes{route}` — bytes held by the in-process tier (key and document, as
  `maxBytes` counts them); in multiprocess mode the workers' values are summed (`livesum`),
  each worker holding its own cache.
- `routeway_cache_tokens_saved_total{route, type}` — upstream tokens a hit did not spend,
  from the stored answer's usage.
- `routeway_cache_redis_errors_total{op, reason}` — shared-tier calls that failed or timed
  out and fell through to a miss (get) or to not sharing the answer (set).
- `routeway_cache_redis_skipped_total{op}` — calls not made because the shared tier failed
  moments ago (`redis_store.RedisStore`'s pause), so a down Redis costs no timeout per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

CACHE_REQUESTS = "routeway_cache_requests"
CACHE_BYTES = "routeway_cache_bytes"
CACHE_TOKENS_SAVED = "routeway_cache_tokens_saved"
CACHE_REDIS_ERRORS = "routeway_cache_redis_errors"
CACHE_REDIS_SKIPPED = "routeway_cache_redis_skipped"


class CacheMetrics:
    """The cache's families, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            CACHE_REQUESTS,
            "Requests on routes with a response cache, by result (hit, miss, bypass).",
            ["route", "result"],
            registry=registry,
        )
        self.bytes = Gauge(
            CACHE_BYTES,
            "Bytes held by the in-process response cache (keys and stored answers).",
            ["route"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.tokens_saved = Counter(
            CACHE_TOKENS_SAVED,
            "Upstream tokens not spent because the cache answered, by type.",
            ["route", "type"],
            registry=registry,
        )
        self.redis_errors = Counter(
            CACHE_REDIS_ERRORS,
            "Shared (Redis) cache calls that failed or timed out, by operation and reason.",
            ["op", "reason"],
            registry=registry,
        )
        self.redis_skipped = Counter(
            CACHE_REDIS_SKIPPED,
            "Shared (Redis) cache calls skipped while the tier is paused after a failure.",
            ["op"],
            registry=registry,
        )

    def count_hit_tokens(self, route: str, prompt: int, completion: int) -> None:
        """Tokens a hit saved (the stored answer's usage)."""
        if prompt:
            self.tokens_saved.labels(route, "prompt").inc(prompt)
        if completion:
            self.tokens_saved.labels(route, "completion").inc(completion)
