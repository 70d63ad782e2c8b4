"""Routing through the real gateway: weights, stickiness, ejection, hot apply.

Matrix: a 75/25 split over 400 real requests is exact (smooth round-robin); weight 0 gets
nothing; a sticky session keeps its backend and moves only when that backend is ejected;
passive health ejects a failing backend (traffic moves to the healthy one), takes it back
after the ejection time on the injected clock, and still uses it when every backend is
ejected; ejection state survives a re-apply of an unchanged backend; hot apply while streams
are in flight (none fails, each finishes on the config it started with, new requests use the
new one).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import orjson
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


async def post_many(
    gateway: Gateway, count: int, headers: dict[str, str] | None = None, concurrency: int = 8
) -> list[tuple[int, str]]:
    results: list[tuple[int, str]] = []
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(
                f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT), headers=headers
            ) as response:
                await response.read()
                results.append((response.status, response.headers.get("x-routeway-backend", "")))

        for start in range(0, count, concurrency):
            await asyncio.gather(*(one() for _ in range(min(concurrency, count - start))))
    return results


async def test_weighted_split_is_exact_over_real_requests(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend(n, upstream.base("ok")) for n in ("a", "b", "z")]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("a", 75), ("b", 25), ("z", 0)])]), {})
    results = await post_many(gateway, 400)
    counts = Counter(backend for _, backend in results)
    assert {status for status, _ in results} == {200}
    assert counts == {"ns/a": 300, "ns/b": 100}


async def test_sticky_sessions_keep_their_backend_while_healthy(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend(n, upstream.base("ok"), failures=1) for n in ("a", "b", "c")]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("a", 1), ("b", 1), ("c", 1)], sticky="x-session-id")]), {}
    )
    homes: dict[str, str] = {}
    for session_id in ("s1", "s2", "s3", "s4", "s5", "s6"):
        results = await post_many(gateway, 4, {"x-session-id": session_id}, concurrency=2)
        assert len({backend for _, backend in results}) == 1
        homes[session_id] = results[0][1]
    assert len(set(homes.values())) > 1
    # eject one backend: only its sessions move, and they all stay on their new home
    victim = next(iter(homes.values()))
    table = gateway.runtime.table
    assert table is not None
    table.backends[victim].health.record_failure()
    for session_id, home in homes.items():
        results = await post_many(gateway, 3, {"x-session-id": session_id}, concurrency=3)
        backends_now = {backend for _, backend in results}
        assert len(backends_now) == 1
        assert (backends_now == {home}) == (home != victim)


async def test_ejection_and_recovery(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("bad", upstream.base("status-500"), failures=2),
        make_backend("good", upstream.base("ok"), failures=2),
    ]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("bad", 1), ("good", 1)])]), {})
    first = await post_many(gateway, 4, concurrency=1)
    assert Counter(first) == {(500, "ns/bad"): 2, (200, "ns/good"): 2}
    registry = gateway.runtime.metrics.registry
    assert registry.get_sample_value("routeway_backend_ejections_total", {"backend": "ns/bad"}) == 1
    ejected = await post_many(gateway, 10)
    assert Counter(ejected) == {(200, "ns/good"): 10}
    # re-applying the unchanged backend keeps its ejection
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("bad", 1), ("good", 2)])]), {})
    assert Counter(await post_many(gateway, 3)) == {(200, "ns/good"): 3}
    gateway.clock.advance(30)  # baseEjection
    back = await post_many(gateway, 3, concurrency=1)
    assert (500, "ns/bad") in back


async def test_every_backend_ejected_still_serves(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("a", upstream.base("ok"), failures=1),
        make_backend("b", upstream.base("ok"), failures=1),
    ]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("a", 1), ("b", 1)])]), {})
    table = gateway.runtime.table
    assert table is not None
    for backend in table.backends.values():
        backend.health.record_failure()
        assert backend.health.is_ejected()
    results = await post_many(gateway, 4)
    assert {status for status, _ in results} == {200}
    assert {backend for _, backend in results} == {"ns/a", "ns/b"}


async def test_hot_apply_with_streams_in_flight(gateway: Gateway, upstream: Upstream) -> None:
    old = make_config([make_backend("old", upstream.base("gate"))], [make_route("gpt", [("old", 1)])])
    new = make_config([make_backend("new", upstream.base("ok"))], [make_route("gpt", [("new", 1)])])
    gateway.runtime.apply(old, {})
    async with aiohttp.ClientSession() as session:
        responses = [
            await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
            for _ in range(3)
        ]
        await upstream.entered.wait()
        gateway.runtime.apply(new, {})
        after = await post_many(gateway, 5)
        upstream.release.set()
        bodies = [await r.read() for r in responses]
        for response in responses:
            response.close()
    assert {r.status for r in responses} == {200}
    assert {r.headers["x-routeway-revision"] for r in responses} == {old.revision}
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
    assert after == [(200, "ns/new")] * 5


async def test_every_backend_ejected_and_failing_is_503_with_retry_after(gateway: Gateway) -> None:
    dead = "http://127.0.0.1:1/v1"  # nothing listens on port 1: connection refused
    backends = [make_backend("a", dead, failures=1), make_backend("b", dead, failures=1)]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("a", 1), ("b", 1)])]), {})
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.post(f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT)) as response:
                body = await response.json()
                statuses.append((response.status, response.headers.get("Retry-After"), body["error"]["code"]))
    # first requests: one backend is still admitted, a refused connection is a 502
    assert statuses[0][0] == 502
    # once both are ejected the model is down: 503, with the time until one is re-admitted
    status, retry_after, code = statuses[-1]
    assert (status, code) == (503, "backend_unavailable")
    assert retry_after is not None and int(retry_after) >= 1
