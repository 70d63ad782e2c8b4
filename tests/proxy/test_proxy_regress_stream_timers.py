"""The stream timers against upstreams with realistic timing: slow first token, then idle.

The upstream here sends its headers at once and then follows a script of waits and events,
as a model server does (headers, a long prefill, then tokens). Matrix:
- first body byte later than `idle` but within `firstByte` (the normal LLM case): the stream
  is relayed whole, and so is a non-streamed answer whose body comes late;
- first body byte later than `firstByte`, headers sent at once: nothing reached the client, so
  it is a retryable `timeout` (to the fallback when listed, else 504 `upstream_timeout`);
- after the first byte the bound is `idle` between events: a gap longer than `idle` cuts the
  stream with an error event (`upstream_idle_timeout`, 504) although it is far within
  `firstByte`; steady gaps under `idle` over a stream longer than `firstByte` are not cut;
- the route's `timeout` caps a stream that is still healthy (`upstream_total_timeout`) and
  does not apply its bound to a stream that ends in time.
The scripts' long waits are bounded, so a broken timer makes a test fail, never hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from proxy_helpers import (
    Gateway,
    chat_chunk,
    chat_document,
    make_backend,
    make_config,
    make_route,
    start_site,
)

Step = tuple[str, float | str]
SCRIPTS: dict[str, list[Step]] = {
    # prefill of 0.4 s, then tokens at once (idle 0.1 in the tests, firstByte 5)
    "late-first": [("wait", 0.4), ("event", "Hel"), ("event", "lo"), ("event", "!")],
    # prefill, first token, then a 1.2 s stall (longer than idle, well within firstByte)
    "late-then-stall": [("wait", 0.3), ("event", "Hel"), ("wait", 1.2), ("event", "lo")],
    # headers only, for 1.2 s
    "no-body": [("wait", 1.2), ("event", "late")],
    # ten events 0.08 s apart: longer in total than firstByte 0.3 and idle 0.25
    "steady": [step for _ in range(10) for step in (("wait", 0.08), ("event", "."))],
}
CHAT: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


async def scripted(request: web.Request) -> web.StreamResponse:
    script = SCRIPTS[request.match_info["script"]]
    body = orjson.loads(await request.read())
    stream = bool(body.get("stream"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream" if stream else "application/json"}
    )
    await response.prepare(request)  # a StreamResponse sends its headers at once
    text = ""
    for kind, value in script:
        if kind == "wait":
            await asyncio.sleep(float(value))
        elif stream:
            await response.write(chat_chunk("m", str(value)))
        else:
            text += str(value)
    if stream:
        await response.write(chat_chunk("m", None, "stop") + b"data: [DONE]\n\n")
    else:
        await response.write(orjson.dumps(chat_document("m", text)))
    await response.write_eof()
    return response


async def ok(request: web.Request) -> web.Response:
    return web.json_response(chat_document("m", "from the fallback"))


@pytest.fixture
async def scripts() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{script}/v1/chat/completions", scripted)
    app.router.add_post("/ok/{tail:.*}", ok)
    runner, url = await start_site(app)
    yield url
    await runner.cleanup()


def apply(gateway: Gateway, url: str, script: str, route_timeout: float | None = None, **timing: Any) -> None:
    backends = [
        make_backend("b", f"{url}/{script}/v1", failures=100, **timing),
        make_backend("fb", f"{url}/ok/v1"),
    ]
    routes = [
        make_route("gpt", [("b", 1)], timeout=route_timeout),
        make_route("retrying", [("b", 1)], fallbacks=("fb",), retry_on=("timeout",)),
    ]
    gateway.runtime.apply(make_config(backends, routes), {})


async def post(gateway: Gateway, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=body) as response,
    ):
        return response.status, await response.read()


def events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e and e != b"data: [DONE]"]


def text_of(raw: bytes) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events(raw) if "choices" in e)


def errors(gateway: Gateway, reason: str, route: str = "ns/gpt") -> float:
    labels = {"route": route, "backend": "ns/b", "reason": reason}
    return gateway.runtime.metrics.registry.get_sample_value("routeway_upstream_errors_total", labels) or 0.0


async def test_a_first_token_later_than_idle_is_not_a_stall(gateway: Gateway, scripts: str) -> None:
    apply(gateway, scripts, "late-first", first_byte=5.0, idle=0.1)
    status, raw = await post(gateway, {**CHAT, "stream": True})
    assert status == 200
    assert text_of(raw) == "Hello!" and raw.endswith(b"data: [DONE]\n\n")
    assert not any("error" in e for e in events(raw))
    status, raw = await post(gateway, CHAT)  # a JSON body that comes late, after its headers
    assert status == 200
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "Hello!"
    assert errors(gateway, "idle-timeout") == 0


async def test_a_first_byte_later_than_first_byte_is_a_retryable_timeout(
    gateway: Gateway, scripts: str
) -> None:
    apply(gateway, scripts, "no-body", first_byte=0.2, idle=5.0)
    for body in ({**CHAT, "stream": True}, CHAT):
        status, raw = await post(gateway, body)
        assert status == 504
        assert orjson.loads(raw)["error"]["code"] == "upstream_timeout"
        status, raw = await post(gateway, {**body, "model": "retrying"})
        assert status == 200 and b"from the fallback" in raw
    assert errors(gateway, "timeout") == 2 and errors(gateway, "timeout", "ns/retrying") == 2


async def test_after_the_first_byte_the_bound_is_idle(gateway: Gateway, scripts: str) -> None:
    apply(gateway, scripts, "late-then-stall", first_byte=5.0, idle=0.2)
    status, raw = await post(gateway, {**CHAT, "stream": True})
    assert status == 200  # the headers went out with the first token
    received = events(raw)
    assert text_of(raw) == "Hel"
    assert received[-1]["error"]["code"] == "upstream_idle_timeout"
    assert errors(gateway, "idle-timeout") == 1


async def test_steady_events_outlast_first_byte_and_idle(gateway: Gateway, scripts: str) -> None:
    apply(gateway, scripts, "steady", first_byte=0.3, idle=0.25)
    status, raw = await post(gateway, {**CHAT, "stream": True})
    assert status == 200 and text_of(raw) == ".........." and raw.endswith(b"data: [DONE]\n\n")
    assert errors(gateway, "idle-timeout") == errors(gateway, "timeout") == 0


async def test_the_route_timeout_caps_a_healthy_stream(gateway: Gateway, scripts: str) -> None:
    apply(gateway, scripts, "steady", route_timeout=0.4, first_byte=5.0, idle=5.0)
    status, raw = await post(gateway, {**CHAT, "stream": True})
    assert status == 200
    received = events(raw)
    assert 0 < len(text_of(raw)) < 10
    assert received[-1]["error"]["code"] == "upstream_total_timeout"
    assert errors(gateway, "total-timeout") == 1
    apply(gateway, scripts, "steady", route_timeout=30.0, first_byte=5.0, idle=5.0)
    status, raw = await post(gateway, {**CHAT, "stream": True})
    assert text_of(raw) == ".........." and errors(gateway, "total-timeout") == 1
