"""The limiter of one proxy process: which store, rebuilt when the gateway's settings change.

Which store (`limiter.py` says what each shares):

- `GatewayLimits.redis_url` set: `RedisStore`, every pod of the gateway shares each budget, so
  every pod enforces the whole limit (replicas do not divide it). The password comes from the
  credential store (`redis_password_ref`, resolved like a backend's credential), never from
  the ProxyConfig. A change of URL, password or failure mode builds a new limiter; the old
  store is closed (requests still holding its reservations settle into nothing, at most a
  few seconds of a budget's accuracy).
- else, a worker of a `--workers N` group: the supervisor's `SharedStore` table, whose path
  the worker was given (`shared.TABLE_ENV`), so the group enforces one budget;
- else a `LocalStore`.

Without Redis a gateway's pods share nothing and each enforces `limit // replicas`, with
`replicas` from the config. `routeway serve` is one process group on one machine: its source
renders `replicas: 1` whatever the ModelGateway says (`routeway.local.load_local`), so there
the share is the whole limit.

Settlement: the local and shared stores never suspend, so settling inline costs no event-loop
round and cannot be cut by a cancellation; a Redis settlement is a round trip the answer does
not wait for, run as a task (every Redis ticket settles, even with nothing to change: that
deletes its reservation record). Shutdown waits for those tasks and the limiter's background
releases (`Limiter.drain`) before it closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from routeway.proxyconfig import GatewayLimits
from routeway_proxy.limits.limiter import FailureMode, Limiter, Ticket
from routeway_proxy.limits.local import Clock, LimitStore, LocalStore
from routeway_proxy.limits.metrics import LimitMetrics
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.shared import SharedStore

log = logging.getLogger("routeway.proxy.limits")

Settings = tuple[str | None, str | None, str, int]
"""(redis url, password, failure mode, replicas): what a limiter is built from."""


class ProcessLimits:
    """The current `Limiter` of this process (`limiter`), and its store's lifetime."""

    def __init__(
        self, registry: CollectorRegistry, *, shared_table: str | None = None, clock: Clock = time.time
    ) -> None:
        self.metrics = LimitMetrics(registry)
        self._clock = clock
        self._shared_table = shared_table
        self._base: LimitStore = SharedStore(shared_table, clock) if shared_table else LocalStore(clock)
        self._base_name = "shared" if shared_table else "local"
        self._settings: Settings = (None, None, "FailOpen", 1)
        self.limiter = Limiter(self._base, self._base_name, metrics=self.metrics)
        self._settling: set[asyncio.Task[None]] = set()

    def configure(self, limits: GatewayLimits, credentials: Mapping[str, str]) -> None:
        """Use `limits` from now on (called with each applied config; a no-op when unchanged)."""
        password = credentials.get(limits.redis_password_ref) if limits.redis_password_ref else None
        replicas = 1 if limits.redis_url else max(1, limits.replicas)
        settings: Settings = (limits.redis_url, password, limits.on_redis_failure, replicas)
        if settings == self._settings:
            return
        previous = self.limiter
        if limits.redis_url:
            if (limits.redis_url, password) == self._settings[:2]:
                store, name = previous.store, previous.store_name
            else:
                store, name = RedisStore(connect(limits.redis_url, password)), "redis"
        else:
            store, name = self._base, self._base_name
        self.limiter = Limiter(
            store,
            name,
            replicas=replicas,
            on_failure=FailureMode(limits.on_redis_failure),
            metrics=self.metrics,
        )
        self._settings = settings
        if previous.store is not store and previous.store is not self._base:
            self._close_later(previous)

    async def settle(self, limiter: Limiter, ticket: Ticket | None, used: int | None) -> None:
        """Settle a reservation `limiter` made; see the module docstring for when it waits."""
        if ticket is None or (not ticket.record and used == ticket.reserved):
            return
        if limiter.store_name != "redis":
            await limiter.settle(ticket, used)  # never suspends: no cancellation can cut it
            return
        task = asyncio.get_running_loop().create_task(limiter.settle(ticket, used))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _close_later(self, limiter: Limiter) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside a loop (tests): nothing is connected yet
            return
        task = loop.create_task(_drain_and_close(limiter))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def close(self) -> None:
        """At shutdown: wait for pending settlements, close Redis and the shared table."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.limiter.drain()
        if self.limiter.store is not self._base:
            await self.limiter.store.close()
        await self._base.close()


async def _drain_and_close(limiter: Limiter) -> None:
    """A replaced Redis limiter: its releases under way first, then its connection."""
    await limiter.drain()
    await limiter.store.close()
