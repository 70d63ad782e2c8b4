"""The response cache on the request path: the real `openai` client, the gateway, real upstreams.

Matrix:
- headers: `x-routeway-cache` miss then hit (with `Age`), bypass for `no-cache`, on errors of a
  cached route too, never on a route without a cache (answers and errors);
- a hit never reaches the upstream (its requests are counted) and counts as a request of the
  route with no backend; metrics: requests by result, bytes held, tokens saved;
- streams: a streamed miss is stored from the upstream's bytes and replayed to the SDK as the
  same text (usage chunk only when asked); a streamed miss answers a later non-streamed
  request, and a non-streamed miss a later stream; a cut stream stores nothing;
- `no-cache` refreshes, `no-store` keeps out; answers not stored: `finish_reason: tool_calls`,
  a 500;
- TTL expiry on an injected clock, the `maxBytes` bound evicting the least recently used, a
  changed cache config emptying the route;
- scope: `Client` keeps two ModelClients' answers apart (each key its own entry) and callers
  without a ModelClient (the gateway-wide key) share one anonymous scope; `Route` shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI
from proxy_helpers import FakeClock, Gateway, Upstream, make_backend, make_config, make_route, start_site

from routeway.proxyconfig import CacheConfig, ClientConfig, RouteConfig, hash_client_key

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def client(gateway: Gateway, key: str = "anything") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=10)


def cached(
    route: RouteConfig, ttl: float = 600, max_bytes: int = 1 << 20, scope: str = "Route"
) -> RouteConfig:
    cache = CacheConfig.model_validate({"ttl": ttl, "maxBytes": max_bytes, "scope": scope})
    return route.model_copy(update={"cache": cache})


def apply_cached(gateway: Gateway, upstream: Upstream, behaviour: str = "ok", **cache: Any) -> None:
    backend = make_backend("b1", upstream.base(behaviour))
    routes = [cached(make_route("gpt", [("b1", 1)]), **cache), make_route("plain", [("b1", 1)])]
    gateway.runtime.apply(make_config([backend], routes), {})


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def chat(c: AsyncOpenAI, content: str = "hi", **extra: Any) -> tuple[str, str | None, str]:
    """The answer's text, its x-routeway-cache header and its Age header ("" when absent)."""
    raw = await c.chat.completions.with_raw_response.create(
        model=extra.pop("model", "gpt"), messages=[{"role": "user", "content": content}], **extra
    )
    answer = raw.parse()
    return (
        answer.choices[0].message.content or "",
        raw.headers.get("x-routeway-cache"),
        raw.headers.get("age", ""),
    )


async def stream_text(c: AsyncOpenAI, content: str = "hi", **extra: Any) -> tuple[str, str | None, list[Any]]:
    async with c.chat.completions.with_streaming_response.create(
        model="gpt", messages=[{"role": "user", "content": content}], stream=True, **extra
    ) as raw:
        header = raw.headers.get("x-routeway-cache")
        chunks = [chunk async for chunk in await raw.parse()]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return text, header, chunks


async def test_miss_then_hit_without_calling_the_upstream(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        first = await chat(c)
        second = await chat(c)
        raw = await c.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
    assert first[:2] == ("hello there", "miss")
    assert second[:2] == ("hello there", "hit") and second[2] == "0"
    assert len(upstream.seen) == 1
    assert raw.headers["x-routeway-route"] == "ns/gpt" and "x-routeway-backend" not in raw.headers
    assert sample(gateway, "routeway_cache_requests_total", route="ns/gpt", result="miss") == 1
    assert sample(gateway, "routeway_cache_requests_total", route="ns/gpt", result="hit") == 2
    # a hit is a request of the route answered with no backend; the miss one of the backend
    assert sample(gateway, "routeway_requests_total", route="ns/gpt", backend="", code="200", client="") == 2
    assert (
        sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/b1", code="200", client="")
        == 1
    )
    assert sample(gateway, "routeway_cache_tokens_saved_total", route="ns/gpt", type="completion") == 4
    assert sample(gateway, "routeway_cache_bytes", route="ns/gpt") > 0


async def test_a_route_without_cache_has_no_header_even_on_errors(
    gateway: Gateway, upstream: Upstream
) -> None:
    backend = make_backend("b1", upstream.base("ok"))
    failing = make_backend("b2", upstream.base("status-500"))
    routes = [make_route("plain", [("b1", 1)]), make_route("broken", [("b2", 1)])]
    gateway.runtime.apply(make_config([backend, failing], routes), {})
    async with client(gateway) as c:
        assert (await chat(c, model="plain"))[1] is None
        assert (await chat(c, model="plain"))[1] is None
        with pytest.raises(openai.InternalServerError) as error:
            await chat(c, model="broken")
    assert "x-routeway-cache" not in error.value.response.headers
    assert len(upstream.seen) == 3


async def test_errors_of_a_cached_route_carry_the_header_and_are_not_stored(
    gateway: Gateway, upstream: Upstream
) -> None:
    apply_cached(gateway, upstream, behaviour="status-500")
    async with client(gateway) as c:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as error:
                await chat(c)
            assert error.value.response.headers["x-routeway-cache"] == "miss"
        with pytest.raises(openai.InternalServerError) as error:
            await chat(c, extra_headers={"Cache-Control": "no-cache"})
        assert error.value.response.headers["x-routeway-cache"] == "bypass"
        with pytest.raises(openai.BadRequestError) as bad:  # refused before routing
            await c.chat.completions.create(model="gpt", messages="no")  # type: ignore[arg-type]
    assert len(upstream.seen) == 3
    assert "x-routeway-cache" not in bad.value.response.headers  # not yet matched to the route


async def test_a_gateway_error_on_a_cached_route_carries_the_header(gateway: Gateway) -> None:
    """A 502 the gateway raises itself (no upstream answered at all) says `miss` too."""
    backend = make_backend("gone", "http://127.0.0.1:9/v1")  # the discard port: refused
    gateway.runtime.apply(make_config([backend], [cached(make_route("gpt", [("gone", 1)]))]), {})
    async with client(gateway) as c:
        with pytest.raises(openai.APIStatusError) as error:
            await chat(c)
    assert error.value.status_code == 502
    assert error.value.response.headers["x-routeway-cache"] == "miss"


async def test_streamed_miss_is_replayed_to_the_sdk(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        first = await stream_text(c)
        second = await stream_text(c)
        with_usage = await stream_text(c, stream_options={"include_usage": True})
    assert first[:2] == ("Hello", "miss")
    assert second[:2] == ("Hello", "hit")
    assert all(ch.choices for ch in second[2])  # no usage chunk: it was not asked for
    assert second[2][-1].choices[0].finish_reason == "stop"
    assert with_usage[:2] == ("Hello", "hit")
    usage = with_usage[2][-1].usage
    assert with_usage[2][-1].choices == [] and usage is not None and usage.completion_tokens == 3
    assert len(upstream.seen) == 1


async def test_stream_fills_for_a_document_and_a_document_for_a_stream(
    gateway: Gateway, upstream: Upstream
) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        assert (await stream_text(c, "one"))[:2] == ("Hello", "miss")
        assert (await chat(c, "one"))[:2] == ("Hello", "hit")  # the stream's text, not "hello there"
        assert (await chat(c, "two"))[:2] == ("hello there", "miss")
        assert (await stream_text(c, "two"))[:2] == ("hello there", "hit")
    assert len(upstream.seen) == 2


async def test_a_cut_stream_stores_nothing(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream, behaviour="drop-mid")
    async with client(gateway) as c:
        for _ in range(2):
            with pytest.raises(openai.APIError):
                await stream_text(c)
    assert len(upstream.seen) == 2
    assert sample(gateway, "routeway_cache_bytes", route="ns/gpt") == 0


async def test_no_cache_refreshes_and_no_store_keeps_out(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        assert (await chat(c, "a", extra_headers={"Cache-Control": "no-store"}))[1] == "miss"
        assert (await chat(c, "a"))[1] == "miss"  # nothing was stored
        assert (await chat(c, "a"))[1] == "hit"
        assert (await chat(c, "a", extra_headers={"Cache-Control": "no-cache"}))[1] == "bypass"
        assert (await chat(c, "b", extra_headers={"Cache-Control": "no-cache"}))[1] == "bypass"
        assert (await chat(c, "b"))[1] == "hit"  # no-cache still stores the fresh answer
        assert (await stream_text(c, "s", extra_headers={"Cache-Control": "no-store"}))[1] == "miss"
        assert (await stream_text(c, "s"))[1] == "miss"
        assert (await stream_text(c, "s"))[1] == "hit"
    assert len(upstream.seen) == 6
    assert sample(gateway, "routeway_cache_requests_total", route="ns/gpt", result="bypass") == 2


async def test_ttl_expiry_on_the_injected_clock(gateway: Gateway, upstream: Upstream) -> None:
    clock = FakeClock()
    gateway.runtime.cache.cache.memory.clock = clock
    apply_cached(gateway, upstream, ttl=10)
    async with client(gateway) as c:
        assert (await chat(c))[1] == "miss"
        clock.advance(9.5)
        assert (await chat(c))[1:] == ("hit", "9")
        clock.advance(0.5)
        assert (await chat(c))[1] == "miss"
        assert (await chat(c))[1] == "hit"
    assert len(upstream.seen) == 2


async def test_max_bytes_evicts_the_least_recently_used(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        await chat(c, "size")
    one_entry = sample(gateway, "routeway_cache_bytes", route="ns/gpt")
    apply_cached(gateway, upstream, max_bytes=int(one_entry * 2.5))  # room for two entries
    assert sample(gateway, "routeway_cache_bytes", route="ns/gpt") == 0  # a changed config empties
    async with client(gateway) as c:
        assert (await chat(c, "a"))[1] == "miss"
        assert (await chat(c, "b"))[1] == "miss"
        assert (await chat(c, "a"))[1] == "hit"  # a is now the most recent
        assert (await chat(c, "c"))[1] == "miss"  # evicts b
        assert (await chat(c, "a"))[1] == "hit"
        assert (await chat(c, "b"))[1] == "miss"
    assert sample(gateway, "routeway_cache_bytes", route="ns/gpt") == pytest.approx(2 * one_entry)


async def test_a_changed_cache_config_empties_the_route_and_an_unchanged_one_keeps_it(
    gateway: Gateway, upstream: Upstream
) -> None:
    apply_cached(gateway, upstream, ttl=600)
    async with client(gateway) as c:
        assert (await chat(c))[1] == "miss"
        apply_cached(gateway, upstream, ttl=600, behaviour="status-503")  # a backend change only
        assert (await chat(c))[1] == "hit"
        apply_cached(gateway, upstream, ttl=300)
        assert (await chat(c))[1] == "miss"
        backend = make_backend("b1", upstream.base("ok"))
        gateway.runtime.apply(make_config([backend], [make_route("gpt", [("b1", 1)])]), {})
        assert (await chat(c))[1] is None  # the cache is gone with its config
    assert gateway.runtime.cache.cache.settings("ns/gpt") is None


@pytest.fixture
async def tool_upstream() -> AsyncIterator[str]:
    """An upstream whose every chat answer is a tool call."""

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
        return web.json_response(
            {
                "id": "chatcmpl-t",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner, url = await start_site(app)
    yield f"{url}/v1"
    await runner.cleanup()


async def test_a_tool_call_is_not_stored(gateway: Gateway, tool_upstream: str) -> None:
    backend = make_backend("tools", tool_upstream)
    gateway.runtime.apply(make_config([backend], [cached(make_route("gpt", [("tools", 1)]))]), {})
    async with client(gateway) as c:
        for _ in range(2):
            raw = await c.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
            assert raw.headers["x-routeway-cache"] == "miss"
            assert raw.parse().choices[0].finish_reason == "tool_calls"
    assert sample(gateway, "routeway_cache_bytes", route="ns/gpt") == 0


async def test_embeddings_and_completions_are_cached(gateway: Gateway, upstream: Upstream) -> None:
    apply_cached(gateway, upstream)
    async with aiohttp.ClientSession() as session:
        for path, body in (
            ("embeddings", {"model": "gpt", "input": "x"}),
            ("completions", {"model": "gpt", "prompt": "x"}),
        ):
            results = []
            for _ in range(2):
                async with session.post(f"{gateway.v1}/{path}", json=body) as response:
                    assert response.status == 200
                    results.append((response.headers["x-routeway-cache"], await response.read()))
            assert [r[0] for r in results] == ["miss", "hit"]
            assert results[0][1] == results[1][1]  # the stored bytes, as the upstream sent them
    assert len(upstream.seen) == 2


def apply_with_clients(gateway: Gateway, upstream: Upstream, scope: str) -> None:
    """Two ModelClients (keys key-a, key-b) and a gateway-wide key (key-gw) on a cached route."""
    backend = make_backend("b1", upstream.base("ok"))
    config = make_config(
        [backend], [cached(make_route("gpt", [("b1", 1)]), scope=scope)], client_keys=("ns/gw/key",)
    )
    clients = tuple(
        ClientConfig.model_validate({"id": f"ns/team-{name}", "keyRef": f"ns/team-{name}/key"})
        for name in ("a", "b")
    )
    config = config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"clients": clients})}
    ).with_revision()
    credentials = {
        "ns/gw/key": hash_client_key("key-gw"),
        "ns/team-a/key": hash_client_key("key-a"),
        "ns/team-b/key": hash_client_key("key-b"),
    }
    gateway.runtime.apply(config, credentials)


async def test_scope_client_keeps_each_clients_answers_apart(gateway: Gateway, upstream: Upstream) -> None:
    apply_with_clients(gateway, upstream, "Client")
    results = {}
    for key in ("key-a", "key-b", "key-gw", "key-a", "key-b", "key-gw"):
        async with client(gateway, key) as c:
            results.setdefault(key, []).append((await chat(c))[1])
    assert results == {k: ["miss", "hit"] for k in ("key-a", "key-b", "key-gw")}
    assert len(upstream.seen) == 3


async def test_scope_route_shares_between_clients(gateway: Gateway, upstream: Upstream) -> None:
    apply_with_clients(gateway, upstream, "Route")
    headers = []
    for key in ("key-a", "key-b", "key-gw"):
        async with client(gateway, key) as c:
            headers.append((await chat(c))[1])
    assert headers == ["miss", "hit", "hit"]
    assert len(upstream.seen) == 1
