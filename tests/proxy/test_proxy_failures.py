"""Failure handling through the real gateway: retries, fallbacks, timeouts, drops, disconnects.

Matrix: retry on 5xx then success; retries exhausted (upstream answer relayed); 500 and 400
never retried; 429 retried per retryOn; fallback after the weighted attempts; connect failure
to fallback; first-byte timeout (retried only when `timeout` is in retryOn); route timeout;
stream stalled mid-way (idle timeout ends it with an error event) vs a long healthy stream;
stream dropped mid-way; non-OpenAI 5xx body wrapped; client disconnect cancels the upstream
request (before the first byte and mid-stream); maxConcurrency with a bounded wait (503 +
Retry-After, then a waiter getting the freed slot); header policy on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from proxy_helpers import CLIENT_LABELLED, Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.client_conn import HALF_CLOSE_WINDOW

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def client(gateway: Gateway) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=10)


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    if name in CLIENT_LABELLED:
        labels.setdefault("client", "")  # requests of no ModelClient
    return gateway.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def post(
    gateway: Gateway, body: dict[str, object] = CHAT, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", data=orjson.dumps(body), headers=headers) as response,
    ):
        return response.status, dict(response.headers), orjson.loads(await response.read())


async def test_retry_on_5xx_then_success(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config(
            [make_backend("b", upstream.base("flaky-2"))], [make_route("gpt", [("b", 1)], attempts=2)]
        ),
        {},
    )
    status, _headers, _ = await post(gateway)
    assert status == 200
    assert len(upstream.seen) == 3
    assert sample(gateway, "routeway_retries_total", route="ns/gpt", backend="ns/b", reason="5xx") == 2
    assert (
        sample(gateway, "routeway_upstream_errors_total", route="ns/gpt", backend="ns/b", reason="5xx") == 2
    )


async def test_retries_exhausted_relays_the_upstream_answer(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config(
            [make_backend("b", upstream.base("status-503"))], [make_route("gpt", [("b", 1)], attempts=1)]
        ),
        {},
    )
    status, headers, body = await post(gateway)
    assert (status, body["error"]["code"]) == (503, "u503")  # type: ignore[index]
    assert headers["X-Upstream"] == "yes" and headers["x-routeway-backend"] == "ns/b"
    assert len(upstream.seen) == 2


@pytest.mark.parametrize("behaviour", ["status-500", "status-400", "status-404"])
async def test_500_and_4xx_are_never_retried(gateway: Gateway, upstream: Upstream, behaviour: str) -> None:
    gateway.runtime.apply(
        make_config(
            [make_backend("b", upstream.base(behaviour)), make_backend("fb", upstream.base("ok"))],
            [make_route("gpt", [("b", 1)], attempts=3, fallbacks=("fb",))],
        ),
        {},
    )
    status, _, _body = await post(gateway)
    assert status == int(behaviour.split("-")[1])
    assert len(upstream.seen) == 1


async def test_429_is_retried_only_when_listed(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend("b", upstream.base("status-429")), make_backend("fb", upstream.base("ok"))]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("b", 1)], fallbacks=("fb",))]), {})
    status, headers, _ = await post(gateway)
    assert (status, headers["x-routeway-backend"]) == (200, "ns/fb")
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("b", 1)], fallbacks=("fb",), retry_on=("5xx",))]), {}
    )
    status, _, body = await post(gateway)
    assert (status, body["error"]["code"]) == (429, "u429")  # type: ignore[index]


async def test_fallbacks_in_order_after_weighted_attempts(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("b", upstream.base("status-502")),
        make_backend("f1", "http://127.0.0.1:9/v1"),
        make_backend("f2", upstream.base("ok")),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("b", 1)], attempts=1, fallbacks=("f1", "f2"))]), {}
    )
    status, headers, body = await post(gateway)
    assert (status, headers["x-routeway-backend"]) == (200, "ns/f2")
    assert [s.behaviour for s in upstream.seen] == ["status-502", "status-502", "ok"]
    assert body["model"] == "f2-model"
    assert (
        sample(
            gateway,
            "routeway_upstream_errors_total",
            route="ns/gpt",
            backend="ns/f1",
            reason="connect-failure",
        )
        == 1
    )


async def test_first_byte_timeout_retried_only_when_listed(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("slow", upstream.base("stall"), first_byte=0.1),
        make_backend("fb", upstream.base("ok")),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("slow", 1)], fallbacks=("fb",), retry_on=("timeout",))]),
        {},
    )
    status, headers, _ = await post(gateway)
    assert (status, headers["x-routeway-backend"]) == (200, "ns/fb")
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("slow", 1)], fallbacks=("fb",))]), {})
    status, headers, body = await post(gateway)
    assert (status, body["error"]["code"]) == (504, "upstream_timeout")  # type: ignore[index]
    assert headers["x-routeway-backend"] == "ns/slow"
    assert upstream.cancelled.count("stall") >= 1  # the gateway hung up on the stalled upstream


async def test_route_timeout_caps_the_whole_request(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend("slow", upstream.base("stall"), first_byte=30)]
    gateway.runtime.apply(make_config(backends, [make_route("gpt", [("slow", 1)], timeout=0.2)]), {})
    status, _, body = await post(gateway)
    assert (status, body["error"]["code"]) == (504, "upstream_timeout")  # type: ignore[index]


async def test_stalled_stream_is_cut_but_a_long_healthy_one_is_not(
    gateway: Gateway, upstream: Upstream
) -> None:
    backends = [
        make_backend("stall", upstream.base("stall-mid"), idle=0.2),
        make_backend("trickle", upstream.base("trickle"), idle=0.2),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("stall", 1)]), make_route("long", [("trickle", 1)])]), {}
    )
    received: list[str] = []
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError) as error:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert received == ["Hel", "lo"]
        assert "stalled" in error.value.message
        long = await c.chat.completions.create(
            model="long", messages=[{"role": "user", "content": "x"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in long])
    assert text == "Hello........"
    assert sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/stall", code="504") == 1
    assert (
        sample(
            gateway,
            "routeway_upstream_errors_total",
            route="ns/gpt",
            backend="ns/stall",
            reason="idle-timeout",
        )
        == 1
    )


async def test_dropped_stream_ends_with_an_error_event(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config([make_backend("b", upstream.base("drop-mid"))], [make_route("gpt", [("b", 1)])]), {}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        assert response.status == 200
        body = await response.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert len(events) == 3
    assert orjson.loads(events[-1][6:])["error"]["code"] == "upstream_disconnect"
    assert sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/b", code="502") == 1


async def test_plain_5xx_body_is_wrapped_in_the_openai_shape(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config([make_backend("b", upstream.base("status-502-plain"))], [make_route("gpt", [("b", 1)])]),
        {},
    )
    status, _, body = await post(gateway)
    assert status == 502
    assert body["error"]["code"] == "upstream_error" and "ns/b" in body["error"]["message"]  # type: ignore[index]


async def test_client_disconnect_before_first_byte_cancels_upstream(
    gateway: Gateway, upstream: Upstream
) -> None:
    gateway.runtime.apply(
        make_config([make_backend("b", upstream.base("stall"))], [make_route("gpt", [("b", 1)])]), {}
    )
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(f"{gateway.v1}/chat/completions", json=CHAT))
        await upstream.entered.wait()
        # a FIN within HALF_CLOSE_WINDOW of the request is taken for a half-close (answered);
        # a client giving up later is cancelled at once
        await asyncio.sleep(2 * HALF_CLOSE_WINDOW)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(upstream.cancel_seen.wait(), 5)
    assert upstream.cancelled == ["stall"]


async def test_client_disconnect_mid_stream_cancels_upstream(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config([make_backend("b", upstream.base("gate"))], [make_route("gpt", [("b", 1)])]), {}
    )
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True})
        first = await response.content.readuntil(b"\n\n")
        assert b"Hel" in first
        await upstream.entered.wait()
        response.close()
    await asyncio.wait_for(upstream.cancel_seen.wait(), 5)
    assert upstream.cancelled == ["gate"]
    for _ in range(100):
        if sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/b", code="499"):
            break
        await asyncio.sleep(0.01)
    assert sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/b", code="499") == 1
    assert gateway.runtime.table.backends["ns/b"].limiter.in_use == 0  # type: ignore[union-attr]


async def test_max_concurrency_bounded_wait(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("b", upstream.base("gate"), max_concurrency=1, queue_timeout=0.05),
        make_backend("patient", upstream.base("gate"), max_concurrency=1, queue_timeout=10),
    ]
    config = make_config(backends, [make_route("gpt", [("b", 1)]), make_route("wait", [("patient", 1)])])
    gateway.runtime.apply(config, {})
    table = gateway.runtime.table
    assert table is not None
    async with aiohttp.ClientSession() as session:
        holders = [
            await session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "model": m, "stream": True})
            for m in ("gpt", "wait")
        ]
        status, headers, body = await post(gateway)
        assert (status, body["error"]["code"]) == (503, "backend_unavailable")  # type: ignore[index]
        assert headers["Retry-After"] == "1" and headers["x-routeway-backend"] == "ns/b"
        # a waiter with a longer queue timeout gets the slot as soon as the holder finishes
        waiter = asyncio.create_task(post(gateway, {**CHAT, "model": "wait"}))
        limiter = table.backends["ns/patient"].limiter
        for _ in range(2000):  # until the request is queued (bounded: never hangs the suite)
            if limiter.waiting:
                break
            await asyncio.sleep(0.001)
        assert limiter.waiting == 1
        gateway.runtime.apply(config, {})  # an unchanged backend keeps its limiter and its queue
        assert gateway.runtime.table.backends["ns/patient"].limiter is limiter  # type: ignore[union-attr]
        assert not waiter.done()
        upstream.release.set()
        for holder in holders:
            await holder.read()
            holder.close()
        status, _, _ = await waiter
        assert status == 200
    assert (
        sample(gateway, "routeway_upstream_errors_total", route="ns/gpt", backend="ns/b", reason="overloaded")
        == 1
    )


async def test_header_policy_on_the_wire(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config(
            [make_backend("b", upstream.base("echo"), credential="ns/s/k")], [make_route("gpt", [("b", 1)])]
        ),
        {"ns/s/k": "upstream-key"},
    )
    status, headers, body = await post(
        gateway,
        headers={
            "Authorization": "Bearer client-key",
            "Connection": "X-Hop-Me",
            "X-Hop-Me": "1",
            "Proxy-Authorization": "Basic x",
            "X-Session-Id": "s1",
        },
    )
    assert status == 200
    seen = body["headers"]
    assert seen["Authorization"] == "Bearer upstream-key"  # type: ignore[index]
    assert "X-Hop-Me" not in seen and "Proxy-Authorization" not in seen  # type: ignore[operator]
    assert seen["X-Forwarded-For"] == "127.0.0.1" and seen["X-Forwarded-Proto"] == "http"  # type: ignore[index]
    assert seen["X-Session-Id"] == "s1"  # type: ignore[index]
    assert "X-Secret-Hop" not in headers and "Keep-Alive" not in headers
    assert headers["X-Kept"] == "yes"


async def test_each_attempt_carries_only_its_own_backends_credential(
    gateway: Gateway, upstream: Upstream
) -> None:
    """A fallback after a credentialed backend failed gets its own credential, or none."""
    backends = [
        make_backend("keyed", upstream.base("status-503"), credential="ns/s/a"),
        make_backend("other", upstream.base("status-503"), credential="ns/s/b"),
        make_backend("open", upstream.base("echo")),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("keyed", 1)], fallbacks=("other", "open"))]),
        {"ns/s/a": "key-a", "ns/s/b": "key-b"},
    )
    status, _, body = await post(gateway, headers={"Authorization": "Bearer client-key"})
    assert status == 200
    sent = [[v for k, v in seen.header_items if k.lower() == "authorization"] for seen in upstream.seen]
    assert sent == [["Bearer key-a"], ["Bearer key-b"], []]
    assert "Authorization" not in body["headers"]  # type: ignore[operator]


async def test_backend_total_timeout_cuts_even_a_healthy_stream(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("trickle", upstream.base("trickle"), idle=5, total=0.15),
        make_backend("stall", upstream.base("stall"), first_byte=30, total=0.1),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("trickle", 1)]), make_route("slow", [("stall", 1)])]), {}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        body = await response.read()
    last = [e for e in body.split(b"\n\n") if e][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "upstream_total_timeout"
    status, _, answer = await post(gateway, {**CHAT, "model": "slow"})
    assert (status, answer["error"]["code"]) == (504, "upstream_timeout")  # type: ignore[index]
    assert (
        sample(
            gateway,
            "routeway_upstream_errors_total",
            route="ns/slow",
            backend="ns/stall",
            reason="total-timeout",
        )
        == 1
    )


async def test_chunked_body_over_limit_is_413(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config(
            [make_backend("b", upstream.base("ok"))], [make_route("gpt", [("b", 1)])], max_body_bytes=1000
        ),
        {},
    )

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "gpt", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}]}'

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", data=chunks()) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"
    assert upstream.seen == []


async def test_url_userinfo_becomes_basic_auth_unless_a_credential_is_set(
    gateway: Gateway, upstream: Upstream
) -> None:
    url = upstream.base("echo").replace("http://", "http://user:pw@")
    gateway.runtime.apply(
        make_config(
            [make_backend("basic", url), make_backend("bearer", url, credential="ns/s/k")],
            [make_route("gpt", [("basic", 1)]), make_route("other", [("bearer", 1)])],
        ),
        {"ns/s/k": "upstream-key"},
    )
    _, _, body = await post(gateway)
    assert body["headers"]["Authorization"] == "Basic dXNlcjpwdw=="  # type: ignore[index]
    _, _, body = await post(gateway, {**CHAT, "model": "other"})
    assert body["headers"]["Authorization"] == "Bearer upstream-key"  # type: ignore[index]
