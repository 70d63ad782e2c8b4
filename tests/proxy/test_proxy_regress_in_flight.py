"""After every kind of ending, the in-flight gauge is back to 0 and concurrency slots are free.

Each case sends two requests one after the other to a backend with `maxConcurrency: 1` and no
queue, so a slot leaked by the first makes the second an `overloaded` 503; after them the
route's `routeway_requests_in_flight` reads 0 and the backend's limiter holds nothing.
Matrix: answers (JSON, stream), upstream errors relayed (400, 429, retries exhausted on 503),
connect failure (502), first-byte timeout (504), a stream dropped (502) or stalled (504)
mid-way, a fallback after a failed primary (both slots); a client that leaves before the
first byte and mid-stream (499); answers without an attempt: 429 from the route's limits, a
cache hit, 404 for an unknown model. While a request is held the gauge reads 1, so these
tests see the gauge move, not a gauge that stays 0.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.client_conn import HALF_CLOSE_WINDOW

from routeway.proxyconfig import BackendConfig, CacheConfig, ProxyConfig, RouteConfig, RouteLimits

CHAT: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def slot_backend(name: str, url: str, **timing: Any) -> BackendConfig:
    return make_backend(name, url, max_concurrency=1, queue_timeout=0.0, failures=100, **timing)


def one_route(backend: BackendConfig, route: RouteConfig | None = None) -> ProxyConfig:
    return make_config([backend], [route or make_route("gpt", [(backend.name, 1)])])


def in_flight(gateway: Gateway, route: str = "ns/gpt") -> float:
    value = gateway.runtime.metrics.registry.get_sample_value("routeway_requests_in_flight", {"route": route})
    return value if value is not None else 0.0


def slots_in_use(gateway: Gateway) -> dict[str, int]:
    table = gateway.runtime.table
    assert table is not None
    return {backend_id: entry.limiter.in_use for backend_id, entry in table.backends.items()}


def overloaded(gateway: Gateway, backend: str = "ns/b") -> float:
    labels = {"route": "ns/gpt", "backend": backend, "reason": "overloaded"}
    return gateway.runtime.metrics.registry.get_sample_value("routeway_upstream_errors_total", labels) or 0.0


async def post(gateway: Gateway, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=body) as response,
    ):
        return response.status, await response.read()


async def settled(gateway: Gateway, route: str = "ns/gpt") -> None:
    """Until the gauge is back to 0 (a left client's request ends after the client); bounded."""
    for _ in range(500):
        if in_flight(gateway, route) == 0 and not any(slots_in_use(gateway).values()):
            return
        await asyncio.sleep(0.01)


CASES = {
    "json-ok": ("ok", False, {}, 0, 200),
    "stream-ok": ("ok", True, {}, 0, 200),
    "upstream-400": ("status-400", False, {}, 0, 400),
    "upstream-429": ("status-429", False, {}, 0, 429),
    "retries-exhausted": ("status-503", False, {}, 2, 503),
    "stream-retries-exhausted": ("status-503", True, {}, 2, 503),
    "first-byte-timeout": ("stall", False, {"first_byte": 0.1}, 1, 504),
    "stream-first-byte-timeout": ("stall", True, {"first_byte": 0.1}, 0, 504),
    "stream-dropped-mid-way": ("drop-mid", True, {}, 0, 200),
    "stream-stalled-mid-way": ("stall-mid", True, {"idle": 0.1}, 0, 200),
}


@pytest.mark.parametrize("case", CASES)
async def test_every_ending_releases_the_gauge_and_the_slot(
    gateway: Gateway, upstream: Upstream, case: str
) -> None:
    behaviour, stream, timing, attempts, status = CASES[case]
    backend = slot_backend("b", upstream.base(behaviour), **timing)
    gateway.runtime.apply(one_route(backend, make_route("gpt", [("b", 1)], attempts=attempts)), {})
    for _ in range(2):
        got, _ = await post(gateway, {**CHAT, "stream": stream})
        assert got == status
    assert in_flight(gateway) == 0
    assert slots_in_use(gateway) == {"ns/b": 0}
    assert overloaded(gateway) == 0


async def test_connect_failure_and_fallback_release_both_slots(gateway: Gateway, upstream: Upstream) -> None:
    backends = [slot_backend("b", closed_port_url()), slot_backend("fb", upstream.base("ok"))]
    routes = [make_route("gpt", [("b", 1)]), make_route("fell", [("b", 1)], fallbacks=("fb",))]
    gateway.runtime.apply(make_config(backends, routes), {})
    for _ in range(2):
        assert (await post(gateway, CHAT))[0] == 502
        assert (await post(gateway, {**CHAT, "model": "fell"}))[0] == 200
    assert in_flight(gateway) == in_flight(gateway, "ns/fell") == 0
    assert slots_in_use(gateway) == {"ns/b": 0, "ns/fb": 0}
    assert overloaded(gateway) == 0


async def test_a_client_leaving_mid_stream_releases_the_gauge_and_the_slot(
    gateway: Gateway, upstream: Upstream
) -> None:
    gateway.runtime.apply(one_route(slot_backend("b", upstream.base("gate"))), {})
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
        assert b"Hel" in await response.content.readuntil(b"\n\n")
        await upstream.entered.wait()
        assert in_flight(gateway) == 1 and slots_in_use(gateway) == {"ns/b": 1}  # held: the gauge moved
        response.close()
    await asyncio.wait_for(upstream.cancel_seen.wait(), 5)
    await settled(gateway)
    assert in_flight(gateway) == 0 and slots_in_use(gateway) == {"ns/b": 0}
    upstream.release.set()
    status, raw = await post(gateway, {**CHAT, "stream": True})  # the slot is usable again
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")


async def test_a_client_leaving_before_the_first_byte_releases_the_gauge_and_the_slot(
    gateway: Gateway, upstream: Upstream
) -> None:
    gateway.runtime.apply(one_route(slot_backend("b", upstream.base("stall"))), {})
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(f"{gateway.v1}/chat/completions", json=CHAT))
        await upstream.entered.wait()
        assert in_flight(gateway) == 1 and slots_in_use(gateway) == {"ns/b": 1}
        await asyncio.sleep(2 * HALF_CLOSE_WINDOW)  # giving up, not a half-close (client_conn)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(upstream.cancel_seen.wait(), 5)
    await settled(gateway)
    assert in_flight(gateway) == 0 and slots_in_use(gateway) == {"ns/b": 0}


async def test_answers_without_an_attempt_leave_the_gauge_at_0(gateway: Gateway, upstream: Upstream) -> None:
    backend = slot_backend("b", upstream.base("ok"))
    limited = make_route("gpt", [("b", 1)]).model_copy(
        update={"limits": RouteLimits.model_validate({"requestsPerMinute": 1})}
    )
    cached = make_route("cached", [("b", 1)]).model_copy(
        update={"cache": CacheConfig.model_validate({"ttl": 600, "maxBytes": 1 << 20, "scope": "Route"})}
    )
    gateway.runtime.apply(make_config([backend], [limited, cached]), {})
    statuses = [(await post(gateway, CHAT))[0] for _ in range(3)]
    assert statuses == [200, 429, 429]  # the route's limit: one a minute
    for _ in range(3):
        status, raw = await post(gateway, {**CHAT, "model": "cached"})
        assert status == 200 and orjson.loads(raw)["choices"]
    assert len(upstream.seen) == 2  # one for the limited route, one cache miss
    assert (await post(gateway, {**CHAT, "model": "unknown"}))[0] == 404
    assert in_flight(gateway) == in_flight(gateway, "ns/cached") == 0
    assert slots_in_use(gateway) == {"ns/b": 0}
    registry = gateway.runtime.metrics.registry
    rejected = {"client": "", "route": "ns/gpt", "limit": "requestsPerMinute"}
    assert registry.get_sample_value("routeway_ratelimit_rejections_total", rejected) == 2
    hits = {"route": "ns/cached", "result": "hit"}
    assert registry.get_sample_value("routeway_cache_requests_total", hits) == 2


async def test_a_client_leaving_while_queued_for_a_slot_leaves_nothing_held(
    gateway: Gateway, upstream: Upstream
) -> None:
    backend = make_backend("b", upstream.base("gate"), max_concurrency=1, queue_timeout=30.0)
    gateway.runtime.apply(one_route(backend), {})
    limiter = gateway.runtime.table.backends["ns/b"].limiter  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        holder = await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
        await holder.content.readuntil(b"\n\n")
        queued = asyncio.create_task(session.post(f"{gateway.v1}/chat/completions", json=CHAT))
        for _ in range(2000):  # until it waits for the slot (bounded)
            if limiter.waiting:
                break
            await asyncio.sleep(0.001)
        assert limiter.waiting == 1 and in_flight(gateway) == 2
        await asyncio.sleep(2 * HALF_CLOSE_WINDOW)  # giving up, not a half-close (client_conn)
        queued.cancel()  # the queued client leaves
        with pytest.raises(asyncio.CancelledError):
            await queued
        for _ in range(500):
            if not limiter.waiting and in_flight(gateway) == 1:
                break
            await asyncio.sleep(0.01)
        assert limiter.waiting == 0 and in_flight(gateway) == 1
        upstream.release.set()
        await holder.read()
        holder.close()
    await settled(gateway)
    assert in_flight(gateway) == 0 and slots_in_use(gateway) == {"ns/b": 0}
    status, raw = await post(gateway, CHAT)  # the slot was not handed to the client that left
    assert status == 200 and orjson.loads(raw)["choices"]
