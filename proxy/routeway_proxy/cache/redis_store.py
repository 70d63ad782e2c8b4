"""The shared tier: answers in the gateway's Redis, so every pod of a gateway shares them.

Contract: the shared tier can only ever make an answer cheaper, never fail or delay it.
- Every call is bounded by `timeout` (an `asyncio.timeout` around the command, besides the
  client's own socket timeouts, and redis-py's retries switched off so one call is one try).
- Any failure — refused connection, timeout, a Redis error, a value it cannot read — is a
  miss for `get` and a no-op for `set`, counted in `routeway_cache_redis_errors_total` and
  logged once per outage (not once per request).
- After a failure the tier pauses for `pause` seconds (calls are skipped and counted), so a
  Redis that is down or hanging costs the request path nothing but a clock read.

Entries are `SET key value PX ttl`: Redis expires them itself; `maxBytes` bounds only the
in-process tier — the shared tier's memory is Redis's own (`maxmemory` with an LRU policy,
the operator's Redis settings). The value is `StoredAnswer.encode` (a header line with the
time it was stored, so a hit from Redis says its `Age` too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from routeway_proxy import redis_client
from routeway_proxy.cache.answers import StoredAnswer
from routeway_proxy.cache.memory import Clock, Hit

if TYPE_CHECKING:
    from routeway_proxy.cache.metrics import CacheMetrics

log = logging.getLogger("routeway.proxy")

DEFAULT_TIMEOUT = 0.25
"""Seconds one shared-tier call may take; a Redis next to the gateway answers in well under
a millisecond, so this only ends calls to a Redis that is gone or stuck."""
DEFAULT_PAUSE = 5.0
KEY_PREFIX = "routeway:cache:v1:"


def make_redis_client(url: str, password: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """A client for the shared tier (routeway_proxy.redis_client): socket timeouts at `timeout`,
    no retries (the tier's own timeout and pause decide what a failure costs)."""
    return redis_client.connect(url, password, timeout)


class RedisStore:
    """Get and set answers in Redis, failing quietly to a miss."""

    def __init__(
        self,
        client: Redis,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pause: float = DEFAULT_PAUSE,
        prefix: str = KEY_PREFIX,
        metrics: CacheMetrics | None = None,
        wall: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.pause = pause
        self.prefix = prefix
        self.metrics = metrics
        self.wall = wall  # for Age: the time stored in each entry
        self.monotonic = monotonic  # for the pause
        self.paused_until = 0.0
        self.failing = False  # an outage was logged and has not ended yet

    async def get(self, key: str) -> Hit | None:
        if self._skip("get"):
            return None
        try:
            async with asyncio.timeout(self.timeout):
                value = await self.client.get(self.prefix + key)
        except Exception as exc:  # any failure of the shared tier is a miss
            self._failed("get", exc)
            return None
        self._succeeded()
        if not isinstance(value, bytes):
            return None
        decoded = StoredAnswer.decode(value)
        if decoded is None:
            return None
        answer, stored_at = decoded
        return Hit(answer, max(0.0, self.wall() - stored_at))

    async def set(self, key: str, answer: StoredAnswer, ttl: float) -> bool:
        """Share `answer` for `ttl` seconds; False when it was not (paused or failed)."""
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0 or self._skip("set"):
            return False
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.set(self.prefix + key, answer.encode(self.wall()), px=milliseconds)
        except Exception as exc:
            self._failed("set", exc)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception as exc:  # closing a broken connection must not fail a shutdown
            log.debug("cache: closing the Redis client failed: %s", type(exc).__name__)

    def _skip(self, op: str) -> bool:
        if self.paused_until and self.monotonic() < self.paused_until:
            if self.metrics is not None:
                self.metrics.redis_skipped.labels(op).inc()
            return True
        return False

    def _failed(self, op: str, exc: Exception) -> None:
        reason = "timeout" if isinstance(exc, (TimeoutError, RedisTimeoutError)) else "error"
        if self.metrics is not None:
            self.metrics.redis_errors.labels(op, reason).inc()
        self.paused_until = self.monotonic() + self.pause
        if not self.failing:
            self.failing = True
            # the exception's type only: a message could carry the URL and its password
            log.warning(
                "cache: the shared Redis tier failed (%s on %s, %s); answering from this process "
                "only, trying again in %.0f s",
                reason,
                op,
                type(exc).__name__,
                self.pause,
            )

    def _succeeded(self) -> None:
        self.paused_until = 0.0
        if self.failing:
            self.failing = False
            log.info("cache: the shared Redis tier answers again")
