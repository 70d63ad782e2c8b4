"""What spawned processes run in the multi-process tests (importable by name in the child)."""

from __future__ import annotations

import asyncio
from typing import Any

from limits_helpers import NOON
from routeway_proxy.limits.budget import Charge, Demand, LimitKind
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.shared import SharedStore

TOKENS = 500_000  # per minute: 8,332 requests reserving 100 and keeping 60 fit


def hammer_shared(path: str, tries: int, start: Any, results: Any) -> None:
    """Reserve 1 request and 100 tokens `tries` times on one table, settling each admitted one
    to 60 tokens; the clock stands still, so nothing refills and every count is exact."""
    store = SharedStore(path, clock=lambda: NOON)
    start.wait()
    admitted = 0
    for _ in range(tries):
        decision = store.reserve_now(
            [
                Demand("client:a", LimitKind.REQUESTS_PER_MINUTE, 1500, 1),
                Demand("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, 100),
            ]
        )
        if decision.admitted:
            admitted += 1
            store.settle_now([Charge("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, -40.0, decision.at)])
    store.close_now()
    results.put(admitted)


def hammer_redis(url: str, tries: int, start: Any, results: Any) -> None:
    """The same through Redis, as one pod would: its own client, its own connection."""

    async def run() -> int:
        store = RedisStore(connect(url, timeout=5.0), clock=lambda: NOON)
        admitted = 0
        for _ in range(tries):
            decision = await store.reserve([Demand("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, 100)])
            if decision.admitted:
                admitted += 1
                await store.settle(
                    [Charge("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, -40.0, decision.at)]
                )
        await store.close()
        return admitted

    start.wait()
    results.put(asyncio.run(run()))
