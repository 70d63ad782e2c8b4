"""The admin app and the `mock` provider, through real sockets.

Matrix: /healthz always 200; /readyz 503 before a config and 200 after; /config 503 before,
then the redacted ProxyConfig; a rejected config keeps the last good one serving and shows at
/routes and /config; /routes lists targets, shares, health and per-pair statistics computed
from the registry (error rate, latency and TTFT quantiles); /metrics in the Prometheus text
format with the routeway_ families; statistics read through a `MultiProcessCollector` (the
`--workers N` path) from files written by a separate process; unknown path 404 and wrong
method 405 in the OpenAI shape on the client port; not ready → 503; the `mock` provider
served inside the gateway (plain, streaming with usage stripped, embeddings, errorRate →
retried like an upstream 500 is not, first-byte timeout on a slow mock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.stats import read_stats

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def test_health_readiness_and_config(gateway: Gateway, upstream: Upstream) -> None:
    assert (await get(f"{gateway.admin_url}/healthz"))[0] == 200
    assert (await get(f"{gateway.admin_url}/readyz"))[0] == 503
    assert (await get(f"{gateway.admin_url}/config"))[0] == 503
    status, _, body = await get(f"{gateway.v1}/models")
    assert (status, orjson.loads(body)["error"]["code"]) == (503, "not_ready")
    config = make_config(
        [make_backend("b", upstream.base("ok").replace("http://", "http://user:pw@"), credential="ns/s/k")],
        [make_route("gpt", [("b", 1)])],
    )
    gateway.runtime.apply(config, {"ns/s/k": "sk-very-secret"})
    assert (await get(f"{gateway.admin_url}/readyz"))[0] == 200
    status, headers, body = await get(f"{gateway.admin_url}/config")
    assert status == 200 and headers["x-routeway-revision"] == config.revision
    document = orjson.loads(body)
    assert document["backends"][0]["credentialRef"] == "ns/s/k"
    assert "user:pw" not in body.decode() and "sk-very-secret" not in body.decode()
    assert document["routes"][0]["model"] == "gpt"


async def test_rejected_config_keeps_serving_and_is_shown(gateway: Gateway, upstream: Upstream) -> None:
    config = make_config([make_backend("b", upstream.base("ok"))], [make_route("gpt", [("b", 1)])])
    gateway.runtime.apply(config, {})
    gateway.runtime.reject("examples/bad.yaml", ["ModelRoute ns/x: backend y not found"])
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=CHAT) as response,
    ):
        assert response.status == 200
    _status, _, body = await get(f"{gateway.admin_url}/routes")
    routes = orjson.loads(body)
    assert routes["revision"] == config.revision
    assert routes["lastRejection"]["errors"] == ["ModelRoute ns/x: backend y not found"]
    _, headers, _ = await get(f"{gateway.admin_url}/config")
    assert "backend y not found" in headers["x-routeway-last-rejection"]
    registry = gateway.runtime.metrics.registry
    assert registry.get_sample_value("routeway_config_reloads_total", {"result": "rejected"}) == 1
    assert registry.get_sample_value("routeway_config_info", {"revision": config.revision}) == 1


async def test_routes_and_metrics_show_weights_health_and_stats(gateway: Gateway, upstream: Upstream) -> None:
    backends = [
        make_backend("a", upstream.base("ok")),
        make_backend("b", upstream.base("status-500")),
        make_backend("fb", upstream.base("ok")),
    ]
    gateway.runtime.apply(
        make_config(backends, [make_route("gpt", [("a", 3), ("b", 1)], fallbacks=("fb",))]), {}
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(8):
            async with session.post(f"{gateway.v1}/chat/completions", json=CHAT) as response:
                await response.read()
        async with session.post(f"{gateway.v1}/chat/completions", json={**CHAT, "stream": True}) as response:
            await response.read()
    status, _, body = await get(f"{gateway.admin_url}/routes")
    assert status == 200
    route = orjson.loads(body)["routes"][0]
    assert route["id"] == "ns/gpt"
    a, b = route["targets"]
    assert (a["backend"], a["weight"], a["share"]) == ("ns/a", 3, 0.75)
    assert b["stats"]["errorRate"] == 1.0 and b["stats"]["requests"] == 2
    assert a["stats"]["requests"] == 7 and a["stats"]["errorRate"] == 0.0
    assert a["stats"]["latencySeconds"]["p95"] is not None
    assert a["stats"]["ttftSeconds"]["count"] == 1
    assert b["health"]["consecutiveFailures"] == 2 and b["health"]["ejected"] is False
    assert route["fallbacks"][0]["backend"] == "ns/fb"
    status, headers, text = await get(f"{gateway.admin_url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    exposition = text.decode()
    for name in (
        "routeway_requests_total",
        "routeway_request_duration_seconds_bucket",
        "routeway_time_to_first_token_seconds_bucket",
        "routeway_tokens_total",
        "routeway_requests_in_flight",
        "routeway_config_info",
        "routeway_config_reloads_total",
    ):
        assert name in exposition


async def test_unknown_path_and_wrong_method_in_openai_shape(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config([make_backend("b", upstream.base("ok"))], [make_route("gpt", [("b", 1)])]), {}
    )
    status, _, body = await get(f"{gateway.url}/v2/nothing")
    assert (status, orjson.loads(body)["error"]["code"]) == (404, "not_found")
    status, headers, body = await get(f"{gateway.v1}/chat/completions")
    assert (status, orjson.loads(body)["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in headers["Allow"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", data=b"{not json") as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_json"


def test_stats_merge_workers_through_the_multiprocess_collector(tmp_path: Path) -> None:
    """Two worker processes write metric files; one registry with a MultiProcessCollector sums them."""
    script = textwrap.dedent("""
        import sys
        from routeway_proxy.metrics import ProxyMetrics
        from prometheus_client import CollectorRegistry
        metrics = ProxyMetrics(CollectorRegistry())
        pair = metrics.bind_pair("ns/r", "ns/b")
        for code, seconds in [(200, 0.05), (200, 0.2), (502, 1.5)]:
            pair.count_request(code, seconds)
        pair.ttft.observe(0.1)
        metrics.in_flight.labels("ns/r").inc()
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    stats = read_stats(registry).for_pair("ns/r", "ns/b")
    assert stats.requests == 6 and stats.errors == 2
    assert stats.error_rate == pytest.approx(1 / 3)
    assert stats.latency.count == 6 and stats.ttft.count == 2
    assert 1.0 < (stats.latency.quantile(0.99) or 0) <= 2.5


# --- the mock provider ------------------------------------------------------------------------------


async def test_mock_provider_answers_like_an_upstream(gateway: Gateway) -> None:
    backend = make_backend("sim", None, provider="mock")
    gateway.runtime.apply(make_config([backend], [make_route("gpt", [("sim", 1)])]), {})
    async with AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0) as c:
        answer = await c.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": "one two three"}]
        )
        stream = await c.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        embedding = await c.embeddings.create(model="gpt", input="hello")
    parsed = answer.parse()
    assert answer.headers["x-routeway-backend"] == "ns/sim"
    assert parsed.model == "sim-model" and parsed.choices[0].message.content
    assert chunks and all(chunk.choices for chunk in chunks)  # usage chunk stripped
    assert embedding.data[0].embedding
    registry = gateway.runtime.metrics.registry
    assert (
        registry.get_sample_value(
            "routeway_tokens_total",
            {"route": "ns/gpt", "backend": "ns/sim", "type": "completion", "client": ""},
        )
        or 0
    ) > 0


async def test_mock_provider_failures_and_timeouts(gateway: Gateway) -> None:
    failing = make_backend("failing", None, provider="mock", mock={"errorRate": 1.0})
    slow = make_backend("slow", None, provider="mock", mock={"latency": 30.0}, first_byte=0.1)
    healthy = make_backend("healthy", None, provider="mock")
    gateway.runtime.apply(
        make_config(
            [failing, slow, healthy],
            [
                make_route("fail", [("failing", 1)], attempts=2, fallbacks=("healthy",)),
                make_route("slow", [("slow", 1)]),
            ],
        ),
        {},
    )
    async with AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as failed:
            await c.chat.completions.create(model="fail", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as timed_out:
            await c.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 500  # a 500 is not retried: the mock's own error body
    assert timed_out.value.status_code == 504
