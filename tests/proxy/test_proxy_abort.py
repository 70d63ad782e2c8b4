"""`abort_in_flight` (the end of a drain's grace period): a request still waiting for its
backend gets a 503 "shutting down" in the OpenAI shape, and the backend is not blamed."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from proxy_helpers import Upstream, make_backend, make_config, make_route, start_site
from routeway_proxy.app import abort_in_flight, create_proxy_app
from routeway_proxy.providers.openai import OpenAIProvider
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.stats import read_stats


async def test_a_waiting_request_is_answered_503_and_the_backend_keeps_its_health(upstream: Upstream) -> None:
    runtime = ProxyRuntime()
    app = create_proxy_app(runtime)
    runner, url = await start_site(app)
    try:
        runtime.apply(
            make_config(
                [make_backend("slow", upstream.base("stall"), first_byte=30, failures=1)],
                [make_route("gpt", [("slow", 1)])],
            ),
            {},
        )
        assert abort_in_flight(app) == 0
        async with aiohttp.ClientSession() as client:
            request = asyncio.ensure_future(
                client.post(f"{url}/v1/chat/completions", json={"model": "gpt", "messages": []})
            )
            await asyncio.wait_for(upstream.entered.wait(), 10)  # routed, waiting for the backend
            assert abort_in_flight(app) == 1
            response = await asyncio.wait_for(request, 10)
            body = await response.json()
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert response.headers["x-routeway-backend"] == "ns/slow"  # where it was waiting
        assert body["error"]["code"] == "gateway_shutting_down" and body["error"]["type"] == "server_error"
        assert runtime.table is not None
        health = runtime.table.backends["ns/slow"].health
        assert health.consecutive_failures == 0 and not health.is_ejected()
        stats = read_stats(runtime.metrics.registry).for_pair("ns/gpt", "ns/slow")
        assert stats.by_code == {"503": 1.0}
        assert abort_in_flight(app) == 0  # nothing left in flight
    finally:
        await runner.cleanup()


async def test_an_abort_after_the_answer_was_decided_keeps_its_status(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream cut for idleness is a 504 even when the drain's abort comes while its error event
    is still being written to a slow client (the write is held here, as a full socket would)."""
    original = web.StreamResponse.write
    writing_cut = asyncio.Event()

    async def slow_client(self: web.StreamResponse, data: bytes) -> None:
        if b"upstream_idle_timeout" in bytes(data):
            writing_cut.set()
            await asyncio.sleep(2)
        await original(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", slow_client)
    runtime = ProxyRuntime()
    app = create_proxy_app(runtime)
    runner, url = await start_site(app)
    try:
        runtime.apply(
            make_config(
                [make_backend("b", upstream.base("stall-mid"), idle=0.3)], [make_route("gpt", [("b", 1)])]
            ),
            {},
        )
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                f"{url}/v1/chat/completions", json={"model": "gpt", "messages": [], "stream": True}
            ) as response,
        ):
            await asyncio.wait_for(writing_cut.wait(), 10)
            assert abort_in_flight(app) == 1
            await response.read()
        runtime.metrics.ledger.flush()
        assert read_stats(runtime.metrics.registry).for_pair("ns/gpt", "ns/b").by_code == {"504": 1.0}
    finally:
        upstream.stall.set()
        await runner.cleanup()


async def test_an_unforeseen_error_is_answered_and_accounted_as_500(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever path a routed request takes, it is accounted once: a library error nobody mapped
    (here `RuntimeError("Session is closed")` from the upstream call) is a 500 for its pair."""

    async def broken(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Session is closed")

    monkeypatch.setattr(OpenAIProvider, "send", broken)
    runtime = ProxyRuntime()
    runner, url = await start_site(create_proxy_app(runtime))
    try:
        runtime.apply(
            make_config([make_backend("b", upstream.base("ok"))], [make_route("gpt", [("b", 1)])]), {}
        )
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{url}/v1/chat/completions", json={"model": "gpt", "messages": []}) as response,
        ):
            assert response.status == 500
            assert (await response.json())["error"]["code"] == "internal_error"
        runtime.metrics.ledger.flush()
        assert read_stats(runtime.metrics.registry).for_pair("ns/gpt", "ns/b").by_code == {"500": 1.0}
    finally:
        await runner.cleanup()
