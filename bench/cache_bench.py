"""Response cache: what a hit costs in the proxy process, for a typical chat request.

    .venv/bin/python bench/cache_bench.py [--repeat 7] [--number 20000] [--redis redis://127.0.0.1:6379/0]

A micro-benchmark of the engine alone (`routeway_proxy.cache`), not yet of the request path
(the engine is not wired): per operation, the median and best of --repeat runs of --number
calls, in microseconds, beside the yardstick every request already pays — `orjson.loads` of
the same request body in `admit.parse_request` — and as a ratio to it. Micro-benchmarks
understate in-server cost (CONTRIBUTING.md "Measuring"); read them as relative sizes.

The request: a system prompt and a user message (~1.2 KB of JSON, sampling fields set,
`stream` and `stream_options`); the stored answer: the mock provider's `chat.completion` of
200 tokens (~1.3 KB) with usage. Operations:
- key: `plan_request` (canonical body + sha256 + the Cache-Control plan);
- lookup: `ResponseCache.lookup` in memory (an LRU of 1,000 entries), awaited;
- replay json / replay sse: `render_hit` for a non-streamed / streamed request with usage;
- hit json / hit sse: key + lookup + replay, what the seam will run on a hit;
- miss fill: `storable_answer` + `store` of a non-streamed answer; `assemble` the same
  answer's SSE stream (202 events) through `StreamAssembler`;
- with --redis: one `RedisStore.get` round trip (a local-tier miss that Redis answers).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from routeway_proxy.cache.answers import StreamAssembler, storable_answer
from routeway_proxy.cache.control import plan_request
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.memory import MemoryCaches
from routeway_proxy.cache.redis_store import RedisStore, make_redis_client
from routeway_proxy.cache.tiers import ResponseCache, render_hit
from routeway_proxy.mock_model import mock_reply

from routeway.proxyconfig import MockBehaviour

ROUTE = "default/chat"
SETTINGS = CacheSettings(ttl=600, max_bytes=64 << 20, scope="Client")
SYSTEM = (
    "You are a helpful assistant for the search team. Answer briefly, cite the document ids "
    "you used, and say so when the documents do not answer the question. " * 4
)
BODY: dict[str, Any] = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "How do I rotate the API key of the search-team client without downtime?",
        },
    ],
    "temperature": 0.2,
    "top_p": 1.0,
    "max_tokens": 200,
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u-123",
}


async def capture(body: dict[str, Any]) -> bytes:
    reply = await mock_reply("chat", body, "chat", MockBehaviour())
    return b"".join([part async for part in reply.body])


def timed(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs), min(runs)


async def atimed(fn: Callable[[], Awaitable[object]], number: int, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            await fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs), min(runs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    number, repeat = args.number, args.repeat

    raw_request = orjson.dumps(BODY)
    plain = {k: v for k, v in BODY.items() if k not in ("stream", "stream_options")}
    document = await capture(plain)
    stream = await capture(BODY)
    answer = storable_answer("chat", 200, document)
    assert answer is not None

    cache = ResponseCache(MemoryCaches())
    cache.configure({ROUTE: SETTINGS})
    for index in range(999):  # a warm LRU: the hit is one of 1,000 entries
        other = {**plain, "messages": [{"role": "user", "content": f"question {index}"}]}
        cache.store(ROUTE, plan_request(SETTINGS, ROUTE, "chat", other, "default/search", None), answer)
    plan = plan_request(SETTINGS, ROUTE, "chat", BODY, "default/search", None)
    cache.store(ROUTE, plan, answer)
    json_plan = plan_request(SETTINGS, ROUTE, "chat", plain, "default/search", None)
    hit = await cache.lookup(ROUTE, plan)
    assert hit is not None

    def key() -> object:
        return plan_request(SETTINGS, ROUTE, "chat", BODY, "default/search", None)

    async def hit_path(body: dict[str, Any]) -> object:
        request_plan = plan_request(SETTINGS, ROUTE, "chat", body, "default/search", None)
        found = await cache.lookup(ROUTE, request_plan)
        assert found is not None
        return render_hit(found, request_plan)

    def fill() -> object:
        stored = storable_answer("chat", 200, document)
        assert stored is not None
        return cache.store(ROUTE, json_plan, stored)

    def assemble() -> object:
        assembler = StreamAssembler("chat", SETTINGS.max_bytes)
        assembler.feed(stream)
        return assembler.result()

    rows: list[tuple[str, tuple[float, float]]] = [
        ("yardstick: orjson.loads(request)", timed(lambda: orjson.loads(raw_request), number, repeat)),
        ("key (plan_request)", timed(key, number, repeat)),
        ("lookup (memory, 1,000 entries)", await atimed(lambda: cache.lookup(ROUTE, plan), number, repeat)),
        ("replay json (render_hit)", timed(lambda: render_hit(hit, json_plan), number, repeat)),
        ("replay sse + usage (render_hit)", timed(lambda: render_hit(hit, plan), number, repeat)),
        ("hit json: key + lookup + replay", await atimed(lambda: hit_path(plain), number, repeat)),
        ("hit sse: key + lookup + replay", await atimed(lambda: hit_path(BODY), number, repeat)),
        ("miss fill json: storable + store", timed(fill, number, repeat)),
        ("miss fill sse: assemble 202 events", timed(assemble, number // 10, repeat)),
    ]
    if args.redis:
        store = RedisStore(make_redis_client(args.redis))
        assert await store.set(plan.key or "", answer, 600)
        rows.append(
            (
                "redis get (loopback round trip)",
                await atimed(lambda: store.get(plan.key or ""), number // 10, repeat),
            )
        )
        await store.close()

    yardstick = rows[0][1][0]
    print(
        f"request {len(raw_request)} B, stored answer {answer.size} B, replayed stream "
        f"{len(render_hit(hit, plan)[0])} B; Python {platform.python_version()}, {sys.platform}"
    )
    print()
    print("| operation | median µs | best µs | x yardstick |")
    print("|---|---:|---:|---:|")
    for name, (median, best) in rows:
        print(f"| {name} | {median:.1f} | {best:.1f} | {median / yardstick:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
