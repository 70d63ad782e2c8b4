"""The one way the proxy opens a Redis client (limits and the response cache share a Redis).

Every step bounded by `timeout` and no retries of its own: a retried reserve could reserve
twice, and a cache call that waits is worse than a miss — the callers' failure modes decide
what a failure costs, so the client must fail fast and say so.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(url: str, password: str | None, timeout: float) -> Redis:
    """A client for `spec.limits.redis.url` that never waits longer than `timeout` per step
    and never retries a command."""
    client: Redis = Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
    return client
