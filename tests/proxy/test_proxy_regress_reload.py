"""What a reload changes takes effect at once; what it leaves unchanged keeps its state.

Each test applies a config, exercises it, applies a changed one and exercises that — through
the gateway, against real upstreams. Matrix of changes that must take effect: a backend's
`maxConcurrency` raised (while a request holds the old limit's only slot) and lowered, its
`outlierDetection` threshold, its `firstByte` timeout, a route's retries and its target
weights, a route's limits; rotated upstream and client keys under an unchanged config. State
that must survive a reload of an unchanged backend or route: an ejection, the concurrency slots
in use, a route's spent request budget. A request that started under the old config keeps its slot counted
under the new limit: a changed `maxConcurrency` never lets old and new requests together
exceed it, and a waiter gets what a raised limit frees at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route

from routeway.proxyconfig import BackendConfig, ProxyConfig, RouteConfig, RouteLimits, hash_client_key

CHAT: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


async def post(gateway: Gateway, body: dict[str, Any] = CHAT) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{gateway.v1}/chat/completions", json=body) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def post_with(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=CHAT, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def code_of(raw: bytes) -> str:
    return str(orjson.loads(raw)["error"]["code"])


def config(backends: list[BackendConfig], route: RouteConfig | None = None) -> ProxyConfig:
    return make_config(backends, [route or make_route("gpt", [(backends[0].name, 1)])])


def ejections(gateway: Gateway, backend: str = "ns/b") -> float:
    labels = {"backend": backend}
    return (
        gateway.runtime.metrics.registry.get_sample_value("routeway_backend_ejections_total", labels) or 0.0
    )


def limiter_of(gateway: Gateway, backend: str = "ns/b") -> Any:
    table = gateway.runtime.table
    assert table is not None
    return table.backends[backend].limiter


async def hold_stream(session: aiohttp.ClientSession, gateway: Gateway) -> aiohttp.ClientResponse:
    """A stream of the `gate` upstream, holding its backend slot until `upstream.release`."""
    response = await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 200
    assert b"Hel" in await response.content.readuntil(b"\n\n")
    return response


async def test_max_concurrency_raised_and_lowered_on_reload(gateway: Gateway, upstream: Upstream) -> None:
    """The new limit applies at once, counting the slots requests of the old config still
    hold: old and new requests together never exceed it (never twice the limit)."""

    def limited(limit: int, queue: float = 0.0) -> ProxyConfig:
        return config([make_backend("b", upstream.base("gate"), max_concurrency=limit, queue_timeout=queue)])

    gateway.runtime.apply(limited(1), {})
    limiter = limiter_of(gateway)
    async with aiohttp.ClientSession() as session:
        held = [await hold_stream(session, gateway)]
        status, _, raw = await post(gateway, {**CHAT, "stream": True})
        assert (status, code_of(raw)) == (503, "backend_unavailable")
        gateway.runtime.apply(limited(3), {})  # raised while one slot is held
        held += [await hold_stream(session, gateway) for _ in range(2)]
        status, _, raw = await post(gateway, {**CHAT, "stream": True})
        assert (status, code_of(raw)) == (503, "backend_unavailable")  # 3 in flight: the limit
        assert limiter_of(gateway).in_use == 3
        gateway.runtime.apply(limited(1, queue=30.0), {})  # lowered below what is held
        waiter = asyncio.create_task(post(gateway))
        for _ in range(2000):  # until it waits for a slot (bounded)
            if limiter_of(gateway).waiting:
                break
            await asyncio.sleep(0.001)
        assert limiter_of(gateway).waiting == 1
        gateway.runtime.apply(limited(4, queue=30.0), {})  # raised again: the waiter gets a slot now
        status, _, raw = await asyncio.wait_for(waiter, 10)
        assert status == 200 and orjson.loads(raw)["choices"]
        assert limiter_of(gateway).in_use == 3  # the three streams, still held
        upstream.release.set()
        for response in held:
            await response.read()
            response.close()
    assert limiter_of(gateway).in_use == limiter.in_use == 0
    upstream.release.clear()
    gateway.runtime.apply(limited(1), {})  # lowered, nothing held: one at a time
    async with aiohttp.ClientSession() as session:
        holder = await hold_stream(session, gateway)
        status, _, raw = await post(gateway, {**CHAT, "stream": True})
        assert (status, code_of(raw)) == (503, "backend_unavailable")
        upstream.release.set()
        await holder.read()
        holder.close()


async def test_a_lowered_limit_is_not_exceeded_by_slots_handed_over(
    gateway: Gateway, upstream: Upstream
) -> None:
    """Lowered from 2 to 1 while two requests hold slots and one waits: the first slot given
    back is not handed to the waiter (that would keep 2 in flight under a limit of 1)."""

    def limited(limit: int) -> ProxyConfig:
        return config([make_backend("b", upstream.base("gate"), max_concurrency=limit, queue_timeout=30.0)])

    gateway.runtime.apply(limited(2), {})
    async with aiohttp.ClientSession() as session:
        first = await hold_stream(session, gateway)
        second = await hold_stream(session, gateway)
        gateway.runtime.apply(limited(1), {})
        limiter = limiter_of(gateway)
        waiter = asyncio.create_task(
            session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
        )
        for _ in range(2000):
            if limiter.waiting:
                break
            await asyncio.sleep(0.001)
        assert (limiter.in_use, limiter.waiting) == (2, 1)
        first.close()  # one holder leaves: 1 in flight, the waiter still waits
        for _ in range(500):
            if limiter.in_use == 1:
                break
            await asyncio.sleep(0.01)
        assert (limiter.in_use, limiter.waiting) == (1, 1)
        upstream.release.set()  # the other finishes: now the waiter gets the slot
        await second.read()
        second.close()
        third = await asyncio.wait_for(waiter, 10)
        assert third.status == 200
        await third.read()
        third.close()
    for _ in range(500):
        if limiter.in_use == 0:
            break
        await asyncio.sleep(0.01)
    assert limiter.in_use == 0


async def test_outlier_detection_changed_on_reload(gateway: Gateway, upstream: Upstream) -> None:
    def failing(failures: int) -> ProxyConfig:
        backends = [make_backend("b", upstream.base("status-503"), failures=failures)]
        backends.append(make_backend("ok", upstream.base("ok")))
        return config(backends, make_route("gpt", [("b", 1)], fallbacks=("ok",)))

    gateway.runtime.apply(failing(5), {})
    for _ in range(2):
        assert (await post(gateway))[1]["x-routeway-backend"] == "ns/ok"
    assert ejections(gateway) == 0
    gateway.runtime.apply(failing(1), {})  # one failure ejects from now on
    assert (await post(gateway))[1]["x-routeway-backend"] == "ns/ok"
    assert ejections(gateway) == 1
    seen = len(upstream.seen)
    assert (await post(gateway))[1]["x-routeway-backend"] == "ns/ok"
    assert [s.behaviour for s in upstream.seen[seen:]] == ["ok"]  # the ejected backend is skipped


async def test_first_byte_timeout_changed_on_reload(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(config([make_backend("b", upstream.base("ok"), first_byte=60.0)]), {})
    assert (await post(gateway))[0] == 200
    backends = [make_backend("b", upstream.base("stall"), first_byte=60.0)]
    gateway.runtime.apply(config(backends), {})
    gateway.runtime.apply(config([make_backend("b", upstream.base("stall"), first_byte=0.1)]), {})
    status, _, raw = await post(gateway)  # within the client's 10 s only with the new 0.1 s
    assert (status, code_of(raw)) == (504, "upstream_timeout")


async def test_retries_changed_on_reload(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend("b", upstream.base("flaky-2"), failures=100)]
    gateway.runtime.apply(config(backends, make_route("gpt", [("b", 1)], attempts=0)), {})
    assert (await post(gateway))[0] == 503
    gateway.runtime.apply(config(backends, make_route("gpt", [("b", 1)], attempts=2)), {})
    assert (await post(gateway))[0] == 200  # the second failure, then a retry that succeeds
    assert len(upstream.seen) == 3


async def test_weights_changed_on_reload(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend("a", upstream.base("ok")), make_backend("c", upstream.base("ok"))]

    async def chosen(count: int) -> list[str]:
        return sorted([(await post(gateway))[1]["x-routeway-backend"] for _ in range(count)])

    gateway.runtime.apply(config(backends, make_route("gpt", [("a", 3), ("c", 1)])), {})
    assert await chosen(4) == ["ns/a", "ns/a", "ns/a", "ns/c"]
    gateway.runtime.apply(config(backends, make_route("gpt", [("a", 1), ("c", 3)])), {})
    assert await chosen(4) == ["ns/a", "ns/c", "ns/c", "ns/c"]
    gateway.runtime.apply(config(backends, make_route("gpt", [("a", 0), ("c", 1)])), {})
    assert await chosen(3) == ["ns/c"] * 3


async def test_an_unchanged_backend_keeps_its_ejection_and_its_slots(
    gateway: Gateway, upstream: Upstream
) -> None:
    backends = [
        make_backend("b", upstream.base("status-503"), failures=1),
        make_backend("ok", upstream.base("ok")),
        make_backend("g", upstream.base("gate"), max_concurrency=1, queue_timeout=0.0),
    ]
    routes = [make_route("gpt", [("b", 1)], fallbacks=("ok",)), make_route("gated", [("g", 1)])]
    gateway.runtime.apply(make_config(backends, routes), {})
    assert (await post(gateway))[1]["x-routeway-backend"] == "ns/ok"
    assert ejections(gateway) == 1
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{gateway.v1}/chat/completions", json={**CHAT, "model": "gated", "stream": True}
        )
        await response.content.readuntil(b"\n\n")
        # another route added and the gated one's retries changed: these backends are unchanged
        extra = [*routes[:1], make_route("gated", [("g", 1)], attempts=1), make_route("more", [("ok", 1)])]
        gateway.runtime.apply(make_config(backends, extra), {})
        status, _, raw = await post(gateway, {**CHAT, "model": "gated"})
        assert (status, code_of(raw)) == (503, "backend_unavailable")  # its one slot is still held
        seen = len(upstream.seen)
        assert (await post(gateway))[1]["x-routeway-backend"] == "ns/ok"
        assert [s.behaviour for s in upstream.seen[seen:]] == ["ok"]  # still ejected
        assert ejections(gateway) == 1
        upstream.release.set()
        await asyncio.wait_for(response.read(), 5)
        response.close()
    assert limiter_of(gateway, "ns/g").in_use == 0


async def test_rotated_credentials_take_effect_with_an_unchanged_config(
    gateway: Gateway, upstream: Upstream
) -> None:
    """A rotated upstream key or client key changes no ProxyConfig field (refs only): the
    backend's state is carried over, but the new values are used from the next request."""
    backends = [make_backend("b", upstream.base("echo"), credential="ns/up/k")]
    config = make_config(backends, [make_route("gpt", [("b", 1)])], client_keys=("ns/gw/k",))
    gateway.runtime.apply(config, {"ns/up/k": "upstream-one", "ns/gw/k": hash_client_key("client-one")})
    one = {"Authorization": "Bearer client-one"}
    status, _, raw = await post_with(gateway, one)
    assert status == 200 and orjson.loads(raw)["headers"]["Authorization"] == "Bearer upstream-one"
    gateway.runtime.apply(config, {"ns/up/k": "upstream-two", "ns/gw/k": hash_client_key("client-two")})
    assert (await post_with(gateway, one))[0] == 401
    status, _, raw = await post_with(gateway, {"Authorization": "Bearer client-two"})
    assert status == 200 and orjson.loads(raw)["headers"]["Authorization"] == "Bearer upstream-two"


async def test_route_limits_changed_on_reload_and_kept_when_unchanged(
    gateway: Gateway, upstream: Upstream
) -> None:
    backends = [make_backend("b", upstream.base("ok")), make_backend("c", upstream.base("ok"))]

    def limited(rpm: int, *extra: RouteConfig) -> ProxyConfig:
        route = make_route("gpt", [("b", 1)]).model_copy(
            update={"limits": RouteLimits.model_validate({"requestsPerMinute": rpm})}
        )
        return make_config(backends, [route, *extra])

    gateway.runtime.apply(limited(2), {})
    assert [(await post(gateway))[0] for _ in range(3)] == [200, 200, 429]
    # another route added: this route's limit is unchanged and its budget is not refilled
    gateway.runtime.apply(limited(2, make_route("more", [("c", 1)])), {})
    assert (await post(gateway))[0] == 429
    gateway.runtime.apply(limited(5), {})  # raised: three more this minute
    assert [(await post(gateway))[0] for _ in range(4)] == [200, 200, 200, 429]
