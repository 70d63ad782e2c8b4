"""Exactness across processes: spawned processes hammering one budget, on the shared table
(a worker group) and on Redis (pods). Real concurrency, so only counts are checked; the
processes' clocks stand still, so the counts are exact.

Matrix: shared table — 4 processes x 3,000 tries against 1,500 requests/min: exactly 1,500
admitted (no two processes take the same last request), and the tokens they reserved at 100
and settled at 60 are all in the table. Redis — the same
tokens against 500,000/min: the settled total equals what the store holds (no lost update),
stays within the budget, and nothing was refused while there was room.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from limits_helpers import NOON
from limits_workers import TOKENS, hammer_redis, hammer_shared
from redis_server import RedisServer
from routeway_proxy.limits.budget import Demand, LimitKind
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.shared import SharedStore

PROCESSES = 4
TRIES = 3000


def run_processes(target, *args: object) -> list[int]:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, TRIES, start, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return counts


def test_shared_table_is_exact_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.table")
    table = SharedStore.create(path, slots=64, clock=lambda: NOON)
    counts = run_processes(hammer_shared, path)
    assert sum(1 for c in counts if c) >= 2  # they overlapped: more than one took part
    admitted = sum(counts)
    assert admitted == 1500  # the request limit binds: exactly, not once per process
    probe = table.reserve_now([Demand("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, 0)])
    assert probe.budgets[0].remaining == TOKENS - admitted * 60  # no settlement lost
    table.close_now()


async def test_redis_is_exact_across_pods(redis_server: RedisServer) -> None:
    counts = run_processes(hammer_redis, redis_server.url)
    admitted = sum(counts)
    assert sum(1 for c in counts if c) >= 2
    assert admitted * 60 <= TOKENS
    assert admitted == (TOKENS - 100) // 60 + 1
    store = RedisStore(connect(redis_server.url), clock=lambda: NOON)
    probe = await store.reserve([Demand("client:a", LimitKind.TOKENS_PER_MINUTE, TOKENS, 0)])
    assert probe.budgets[0].remaining == TOKENS - admitted * 60
    await store.close()
