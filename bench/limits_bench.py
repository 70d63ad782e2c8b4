"""Cost of one reservation and its settlement in each limits store (issue 13).

Per request the limit stage will do one `Limiter.reserve` (a client with requestsPerMinute
and tokensPerMinute, a route with requestsPerMinute: three budgets) and one `Limiter.settle`
(the token budget). This times that pair, sequentially in one process, for the in-process
store, the shared table (in /dev/shm when there is one) and Redis (a redis-server started on
127.0.0.1 for the run; the cost is dominated by the loopback round trips). `--processes N`
also runs N processes on one shared table at once and reports the aggregate rate, which shows
what the flock costs under contention.

    .venv/bin/python bench/limits_bench.py [--n 20000] [--processes 2]

Results go to bench/RESULTS.md; nothing here runs in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from routeway_proxy.limits.limiter import Limiter, Limits, Subject
from routeway_proxy.limits.local import LimitStore, LocalStore
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.shared import SharedStore

SUBJECTS = [
    Subject("client", "default/search-team", Limits(requests_per_minute=10**9, tokens_per_minute=10**12)),
    Subject("route", "default/chat", Limits(requests_per_minute=10**9)),
]


async def pairs(store: LimitStore, n: int) -> float:
    """Seconds per reserve + settle."""
    limiter = Limiter(store, "bench")
    for _ in range(min(n, 1000)):  # warm up
        await limiter.settle((await limiter.reserve(SUBJECTS, 1000)).ticket, 400)
    started = time.perf_counter()
    for _ in range(n):
        admission = await limiter.reserve(SUBJECTS, 1000)
        await limiter.settle(admission.ticket, 400)
    return (time.perf_counter() - started) / n


def shared_worker(path: str, n: int, barrier: Any, results: Any) -> None:
    store = SharedStore(path)
    barrier.wait()
    results.put(asyncio.run(pairs(store, n)))


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.01)
    return process, f"redis://127.0.0.1:{port}/0", folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(folder, "limits.table")
    try:
        print(f"local   {asyncio.run(pairs(LocalStore(), args.n)) * 1e6:8.1f} us per reserve+settle")
        print(
            f"shared  {asyncio.run(pairs(SharedStore.create(path), args.n)) * 1e6:8.1f} us per reserve+settle"
        )
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(args.processes), ctx.Queue()
        workers = [
            ctx.Process(target=shared_worker, args=(path, args.n, barrier, results))
            for _ in range(args.processes)
        ]
        for worker in workers:
            worker.start()
        each = [results.get() for _ in workers]
        for worker in workers:
            worker.join()
        per_process = sum(each) / len(each)
        print(
            f"shared x{args.processes} {per_process * 1e6:8.1f} us per pair in each process, "
            f"{args.processes / per_process:,.0f} pairs/s together"
        )
        redis, url, redis_dir = start_redis()
        try:

            async def on_redis() -> float:
                store = RedisStore(connect(url, timeout=1.0), timeout=1.0)
                try:
                    return await pairs(store, args.n // 4)
                finally:
                    await store.close()

            print(f"redis   {asyncio.run(on_redis()) * 1e6:8.1f} us per reserve+settle (2 round trips)")
        finally:
            redis.terminate()
            redis.wait()
            shutil.rmtree(redis_dir, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
