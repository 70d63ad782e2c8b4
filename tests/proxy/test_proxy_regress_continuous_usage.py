"""Upstreams that report usage on every SSE event (vLLM's `continuous_usage_stats`): the
last counts are what the gateway records.

Such an upstream sends cumulative `usage` on each chunk (completion tokens 1, 2, 3, ...), with
or without the usual usage-only final chunk. Matrix: both forms, the client asking for usage or
not, with the last usage event split across two writes; what is recorded is the final counts
(prompt 11, completion 5) everywhere they go: `routeway_tokens_total`, `routeway_cost_total`,
the route's token budget after settlement, and the `--access-log` line. The client gets every
content event; the usage-only final chunk only when it asked for usage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI
from proxy_helpers import FakeClock, Gateway, make_backend, make_config, make_route, start_site
from routeway_proxy.access_log import ACCESS_LOGGER, AccessLog
from routeway_proxy.app import create_admin_app, create_proxy_app
from routeway_proxy.limits.estimate import estimate_tokens
from routeway_proxy.runtime import ProxyRuntime

from routeway.proxyconfig import RouteLimits

PROMPT, COMPLETION = 11, 5
PRICING = {"inputPerMillion": 1.5, "outputPerMillion": 6.0, "currency": "USD"}
MESSAGES: Any = [{"role": "user", "content": "hi"}]
BUDGET = 100_000


def chunk(content: str | None, completion: int, finish: str | None = None, final: bool = False) -> bytes:
    document = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [] if final else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": PROMPT,
            "completion_tokens": completion,
            "total_tokens": PROMPT + completion,
        },
    }
    return b"data: " + orjson.dumps(document) + b"\n\n"


async def continuous(request: web.Request) -> web.StreamResponse:
    """Cumulative usage on every event; `/final/` adds the usage-only final chunk."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for count, word in enumerate(["one", " two", " three", " four"], start=1):
        await response.write(chunk(word, count))
        await asyncio.sleep(0.02)  # tokens come over time: most events arrive in reads of their own
    last = chunk(None, COMPLETION, "stop", final=False)
    if request.match_info["form"] == "final":
        await response.write(last)
        last = chunk(None, COMPLETION, final=True)
    cut = last.index(b'"completion_tokens"') + 5
    await response.write(last[:cut])  # the last usage split across writes
    await asyncio.sleep(0.02)
    await response.write(last[cut:])
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """The gateway with a frozen limits clock: budgets never refill during a test."""
    clock = FakeClock()
    limits_clock = FakeClock()
    runtime = ProxyRuntime(clock=clock, limits_clock=limits_clock)
    runtime.metrics.access = AccessLog()
    runner, url = await start_site(create_proxy_app(runtime))
    admin_runner, admin_url = await start_site(create_admin_app(runtime))
    yield Gateway(url, admin_url, runtime, clock)
    await runner.cleanup()
    await admin_runner.cleanup()


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{form}/v1/chat/completions", continuous)
    runner, url = await start_site(app)
    yield url
    await runner.cleanup()


def value(gateway: Gateway, name: str, **labels: str) -> float:
    gateway.runtime.metrics.ledger.flush()
    return gateway.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("form", ["final", "every-event-only"])
@pytest.mark.parametrize("client_wants_usage", [True, False])
async def test_the_last_usage_of_the_stream_is_recorded(
    gateway: Gateway, upstream_url: str, caplog: pytest.LogCaptureFixture, form: str, client_wants_usage: bool
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    route = make_route("gpt", [("b", 1)]).model_copy(
        update={"limits": RouteLimits.model_validate({"tokensPerMinute": BUDGET})}
    )
    backend = make_backend("b", f"{upstream_url}/{form}/v1", pricing=PRICING)
    gateway.runtime.apply(make_config([backend], [route]), {})
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if client_wants_usage else {}
    async with AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=10) as c:
        for _ in range(2):
            stream = await c.chat.completions.create(model="gpt", messages=MESSAGES, stream=True, **options)
            chunks = [ch async for ch in stream]
            assert (
                "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                == "one two three four"
            )
            usage_only = [ch for ch in chunks if not ch.choices]
            assert len(usage_only) == (1 if form == "final" and client_wants_usage else 0)
        # the budget after two settled streams, read from a third request's headers
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt", messages=MESSAGES, max_tokens=10, stream=True
        )
        [ch async for ch in raw.parse()]
    reserved = estimate_tokens({"messages": MESSAGES, "max_tokens": 10})
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == BUDGET - 2 * (PROMPT + COMPLETION) - reserved
    labels = {"route": "ns/gpt", "backend": "ns/b", "client": ""}
    assert value(gateway, "routeway_tokens_total", **labels, type="prompt") == 3 * PROMPT
    assert value(gateway, "routeway_tokens_total", **labels, type="completion") == 3 * COMPLETION
    assert value(gateway, "routeway_cost_total", **labels, currency="USD") == pytest.approx(
        3 * (PROMPT * 1.5 + COMPLETION * 6.0) / 1_000_000
    )
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(line["prompt_tokens"], line["completion_tokens"]) for line in lines] == [
        (PROMPT, COMPLETION)
    ] * 3
