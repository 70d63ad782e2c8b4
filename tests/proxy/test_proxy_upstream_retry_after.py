"""An upstream's Retry-After through the real gateway (item 5 of issue 14).

Matrix: a 429 with Retry-After puts its backend on hold — this request falls back at once
instead of retrying it, and the next requests skip it (not contacted at all) until the hold
is over (the health clock is moved by hand), counted in `routeway_backend_holds_total` and
shown in `/routes`; with nothing else to serve, the client gets the upstream's 429 and its
Retry-After (the official `openai` client sees both), and a later request gets the gateway's
own 429 with the time left; a 503 whose body is not JSON is wrapped and keeps the upstream's
Retry-After (not the gateway's default of 1); an HTTP-date is passed on in seconds; an
unreadable Retry-After is not passed on and holds nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from proxy_faults import FaultServer
from proxy_helpers import Gateway, make_backend, make_config, make_route

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    await server.start()
    yield server
    await server.close()


def client(gateway: Gateway) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=10)


def route_of(gateway: Gateway, faults: FaultServer, primary: str, fallback: str | None = "ok") -> None:
    backends = [make_backend("a", faults.base(primary))]
    if fallback is not None:
        backends.append(make_backend("fb", faults.base(fallback)))
    fallbacks = ("fb",) if fallback is not None else ()
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("a", 1)], attempts=2, fallbacks=fallbacks)]), {}
    )


def holds(gateway: Gateway, backend: str) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(
        "routeway_backend_holds_total", {"backend": backend}
    )
    return value or 0.0


async def test_a_held_backend_is_skipped_until_its_retry_after_is_over(
    gateway: Gateway, faults: FaultServer
) -> None:
    route_of(gateway, faults, "429-ra-seconds")
    async with client(gateway) as api:
        first = await api.chat.completions.with_raw_response.create(**CHAT)
        assert first.headers["x-routeway-backend"] == "ns/fb"
        assert faults.seen == {"429-ra-seconds": 1, "ok": 1}  # not retried on the backend that said 7 s
        assert holds(gateway, "ns/a") == 1
        second = await api.chat.completions.with_raw_response.create(**CHAT)
        assert second.headers["x-routeway-backend"] == "ns/fb"
        assert faults.seen == {"429-ra-seconds": 1, "ok": 2}  # the next request did not call it
        gateway.clock.advance(7.5)  # the hold is over
        await api.chat.completions.with_raw_response.create(**CHAT)
        assert faults.seen["429-ra-seconds"] == 2
    assert holds(gateway, "ns/a") == 2


async def test_the_hold_shows_in_routes(gateway: Gateway, faults: FaultServer) -> None:
    route_of(gateway, faults, "503-ra-seconds")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.v1}/chat/completions", json=CHAT) as response:
            assert response.status == 200
        async with session.get(f"{gateway.admin_url}/routes") as response:
            route = orjson.loads(await response.read())["routes"][0]
    health = route["targets"][0]["health"]
    assert (health["ejected"], health["heldForSeconds"]) == (True, 7.0)
    assert route["fallbacks"][0]["health"]["heldForSeconds"] == 0.0


async def test_nothing_else_to_serve_the_client_gets_the_upstreams_retry_after(
    gateway: Gateway, faults: FaultServer
) -> None:
    route_of(gateway, faults, "429-ra-seconds", fallback=None)
    async with client(gateway) as api:
        with pytest.raises(openai.RateLimitError) as raised:
            await api.chat.completions.create(**CHAT)
        assert raised.value.response.headers["retry-after"] == "7"
        assert raised.value.code == "u429"  # the upstream's own answer
        assert faults.seen == {"429-ra-seconds": 1}  # attempts: 2, but it said 7 s
        with pytest.raises(openai.RateLimitError) as raised:
            await api.chat.completions.create(**CHAT)
        assert raised.value.response.headers["retry-after"] == "7"  # the health clock stands still
        assert raised.value.code == "upstream_rate_limited"  # the gateway's: nothing was called
        assert faults.seen == {"429-ra-seconds": 1}


@pytest.mark.parametrize(
    ("behaviour", "retry_after"),
    [("503-text-ra-seconds", "7"), ("503-ra-date", None), ("503-empty", "1")],
)
async def test_a_503_passes_on_the_upstreams_retry_after(
    gateway: Gateway, faults: FaultServer, behaviour: str, retry_after: str | None
) -> None:
    route_of(gateway, faults, behaviour, fallback=None)
    async with client(gateway) as api:
        with pytest.raises(openai.InternalServerError) as raised:
            await api.chat.completions.create(**CHAT)
    headers = raised.value.response.headers
    assert raised.value.status_code == 503
    if retry_after is None:  # an HTTP-date 7 s ahead, passed on in seconds
        assert 5 <= int(headers["retry-after"]) <= 7
    else:
        assert headers["retry-after"] == retry_after
    body = raised.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}


async def test_an_unreadable_retry_after_is_dropped_and_holds_nothing(
    gateway: Gateway, faults: FaultServer
) -> None:
    route_of(gateway, faults, "429-ra-garbage", fallback=None)
    async with client(gateway) as api:
        with pytest.raises(openai.RateLimitError) as raised:
            await api.chat.completions.create(**CHAT)
    assert "retry-after" not in raised.value.response.headers
    assert faults.seen == {"429-ra-garbage": 3}  # 1 + attempts: 2, no hold
    assert holds(gateway, "ns/a") == 0
