"""Metric values after real requests, read from the admin `/metrics` page as Prometheus does.

Not whether a family exists (test_proxy_admin does that) but what it says: after a known mix
of requests through the gateway — JSON answers and streams of a fast upstream, a JSON answer
and a stream of a slow one (0.3 s before the headers, resp. before the first token), an
upstream 503 retried once, a backend ejected after one 502 and its fallback — each sample
holds the count and the sums that mix implies: `routeway_requests_total` per code,
`routeway_request_duration_seconds` (count, +Inf bucket, sum at least the upstream's delay,
the buckets under that delay empty), `routeway_time_to_first_token_seconds` (only streams),
`routeway_tokens_total`, `routeway_upstream_errors_total`, `routeway_retries_total`,
`routeway_backend_ejections_total`, `routeway_backend_ejected_until_seconds` (now + base
ejection), `routeway_requests_in_flight` back at 0, `routeway_config_info` (the served
revision only) and `routeway_config_reloads_total`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from proxy_helpers import (
    Gateway,
    Upstream,
    chat_chunk,
    chat_document,
    make_backend,
    make_config,
    make_route,
    start_site,
)

from routeway.proxyconfig import ProxyConfig

DELAY = 0.3
CHAT: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


async def slow(request: web.Request) -> web.StreamResponse:
    """0.3 s before the headers of a JSON answer, or before the first token of a stream."""
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        await asyncio.sleep(DELAY)
        return web.json_response(chat_document("m"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(DELAY)
    await response.write(chat_chunk("m", "late") + chat_chunk("m", None, "stop") + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture
async def slow_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow)
    runner, url = await start_site(app)
    yield url + "/v1"
    await runner.cleanup()


def config(upstream: Upstream, slow_url: str) -> ProxyConfig:
    backends = [
        make_backend("b", upstream.base("ok")),
        make_backend("s", slow_url),
        make_backend("bad", upstream.base("status-503"), failures=100),
        make_backend("ej", upstream.base("status-502"), failures=1),
    ]
    routes = [
        make_route("gpt", [("b", 1)]),
        make_route("slow", [("s", 1)]),
        make_route("bad", [("bad", 1)], attempts=1),
        make_route("ejecting", [("ej", 1)], fallbacks=("b",)),
    ]
    return make_config(backends, routes)


async def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin_url}/metrics") as response:
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def post(gateway: Gateway, model: str, stream: bool = False) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions", json={**CHAT, "model": model, "stream": stream}
        ) as response,
    ):
        await response.read()
        return response.status


async def test_values_after_a_known_mix_of_requests(
    gateway: Gateway, upstream: Upstream, slow_url: str
) -> None:
    first = config(upstream, slow_url)
    gateway.runtime.apply(first, {})
    before = await scrape(gateway)
    applied = first.model_copy(
        update={"gateway": first.gateway.model_copy(update={"max_body_bytes": 2_000_000})}
    ).with_revision()
    gateway.runtime.apply(applied, {})
    assert applied.revision != first.revision

    statuses = [await post(gateway, "gpt") for _ in range(3)]
    statuses += [await post(gateway, "gpt", stream=True) for _ in range(2)]
    statuses += [await post(gateway, "slow"), await post(gateway, "slow", stream=True)]
    statuses.append(await post(gateway, "bad"))
    ejected_at = time.time()
    statuses.append(await post(gateway, "ejecting"))
    assert statuses == [200] * 7 + [503, 200]
    m = await scrape(gateway)

    def v(name: str, **labels: str) -> float:
        return m.get((name, frozenset(labels.items())), 0.0)

    gpt = {"route": "ns/gpt", "backend": "ns/b"}
    slow_pair = {"route": "ns/slow", "backend": "ns/s"}
    assert v("routeway_requests_total", **gpt, code="200", client="") == 5
    assert v("routeway_requests_total", **slow_pair, code="200", client="") == 2
    assert v("routeway_requests_total", route="ns/bad", backend="ns/bad", code="503", client="") == 1
    assert v("routeway_requests_total", route="ns/ejecting", backend="ns/b", code="200", client="") == 1
    assert v("routeway_requests_total", route="ns/ejecting", backend="ns/ej", code="502", client="") == 0

    assert v("routeway_request_duration_seconds_count", **gpt) == 5
    assert v("routeway_request_duration_seconds_bucket", **gpt, le="+Inf") == 5
    assert v("routeway_request_duration_seconds_count", **slow_pair) == 2
    assert v("routeway_request_duration_seconds_sum", **slow_pair) >= 2 * DELAY
    assert v("routeway_request_duration_seconds_bucket", **slow_pair, le="0.25") == 0
    assert v("routeway_request_duration_seconds_bucket", **slow_pair, le="+Inf") == 2

    assert v("routeway_time_to_first_token_seconds_count", **gpt) == 2  # streams only
    assert v("routeway_time_to_first_token_seconds_count", **slow_pair) == 1
    assert v("routeway_time_to_first_token_seconds_sum", **slow_pair) >= DELAY
    assert v("routeway_time_to_first_token_seconds_bucket", **slow_pair, le="0.2") == 0

    # JSON answers carry 5 + 2 tokens, the ok streams 5 + 3; the slow stream reports none
    assert v("routeway_tokens_total", **gpt, type="prompt", client="") == 5 * 5
    assert v("routeway_tokens_total", **gpt, type="completion", client="") == 3 * 2 + 2 * 3
    assert v("routeway_tokens_total", **slow_pair, type="prompt", client="") == 5
    assert v("routeway_tokens_total", **slow_pair, type="completion", client="") == 2

    assert v("routeway_upstream_errors_total", route="ns/bad", backend="ns/bad", reason="5xx") == 2
    assert v("routeway_retries_total", route="ns/bad", backend="ns/bad", reason="5xx") == 1
    assert v("routeway_upstream_errors_total", route="ns/ejecting", backend="ns/ej", reason="5xx") == 1
    assert v("routeway_backend_ejections_total", backend="ns/ej") == 1
    assert v("routeway_backend_ejections_total", backend="ns/bad") == 0
    until = v("routeway_backend_ejected_until_seconds", backend="ns/ej")
    assert ejected_at + 30.0 <= until <= time.time() + 30.0  # base ejection 30 s from the failure

    for route in ("ns/gpt", "ns/slow", "ns/bad", "ns/ejecting"):
        assert v("routeway_requests_in_flight", route=route) == 0
    assert v("routeway_config_info", revision=applied.revision) == 1
    assert ("routeway_config_info", frozenset({("revision", first.revision)})) not in m
    reloads = ("routeway_config_reloads_total", frozenset({("result", "applied")}))
    assert m[reloads] == before[reloads] + 1
