"""`GET /observations`: what each route revision's attempts did, through the real gateway.

Matrix: per (route, revision), counts by outcome class as `routeway.rollout.observations`
defines them — success, serverError (an upstream 503), upstreamRejected (404), clientError
(400), connectFailure, timeout (first byte) — per attempt: a canary attempt that failed
counts against the canary revision although its fallback answered the client; the latency
histogram holds every successful attempt and the ttft histogram the streamed ones, in the
fixed bounds; the stable revision of a route in a rollout is reported (arm "stable") even
before any traffic; the document parses with `report_from_json`, its instance is stable.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import openai
from openai import AsyncOpenAI
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route

from routeway.proxyconfig import ProxyConfig
from routeway.rollout.observations import LATENCY_BOUNDS, TTFT_BOUNDS, report_from_json
from routeway.rollout.serving import ServedRoute, desired_revisions, serve_rollouts

CLOSED_PORT_URL = "http://127.0.0.1:9/v1"
ZERO = {
    "success": 0,
    "serverError": 0,
    "timeout": 0,
    "connectFailure": 0,
    "upstreamRejected": 0,
    "clientError": 0,
}


def observed_config(upstream: Upstream) -> ProxyConfig:
    backends = [
        make_backend("ok", upstream.base("ok")),
        make_backend("bad", upstream.base("status-503"), failures=100),
        make_backend("r404", upstream.base("status-404")),
        make_backend("r400", upstream.base("status-400")),
        make_backend("dead", CLOSED_PORT_URL, failures=100),
        make_backend("slow", upstream.base("stall"), first_byte=0.2, failures=100),
    ]
    others = [
        make_route("rej", [("r404", 1)]),
        make_route("cli", [("r400", 1)]),
        make_route("conn", [("dead", 1)]),
        make_route("slow", [("slow", 1)]),
    ]
    stable = make_config(backends, [make_route("gpt", [("ok", 1)]), *others])
    # the canary revision: a failing backend, with the healthy one as its fallback
    desired = make_config(backends, [make_route("gpt", [("bad", 1)], fallbacks=("ok",)), *others])
    served = ServedRoute(desired_revisions(stable)["ns/gpt"], desired_revisions(desired)["ns/gpt"], 100)
    return serve_rollouts(desired, {"ns/gpt": served})


async def read_observations(gateway: Gateway) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.admin_url}/observations") as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def test_outcomes_per_revision_and_class(gateway: Gateway, upstream: Upstream) -> None:
    config = observed_config(upstream)
    gateway.runtime.apply(config, {})
    routes = {r.model: r for r in config.routes}
    canary = routes["gpt"].canary
    assert canary is not None
    messages: Any = [{"role": "user", "content": "hi"}]
    async with AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=10) as c:
        for _ in range(3):
            answer = await c.chat.completions.create(model="gpt", messages=messages)
            assert answer.choices[0].message.content == "hello there"  # the fallback answered
        stream = await c.chat.completions.create(model="gpt", messages=messages, stream=True)
        assert "".join([k.choices[0].delta.content or "" async for k in stream if k.choices]) == "Hello"
        for model, error, times in (
            ("rej", openai.NotFoundError, 2),
            ("cli", openai.BadRequestError, 1),
            ("conn", openai.APIStatusError, 1),
            ("slow", openai.APIStatusError, 1),
        ):
            for _ in range(times):
                with contextlib.suppress(error):
                    await c.chat.completions.create(model=model, messages=messages)
                    raise AssertionError(f"{model} answered")

    document = await read_observations(gateway)
    assert document["schema"] == 1
    arms = {(a["route"], a["revision"]): a for a in document["arms"]}
    expected = {
        ("ns/gpt", canary.revision): ("canary", {"success": 4, "serverError": 4}),
        ("ns/gpt", routes["gpt"].revision): ("stable", {}),
        ("ns/rej", routes["rej"].revision): ("stable", {"upstreamRejected": 2}),
        ("ns/cli", routes["cli"].revision): ("stable", {"clientError": 1}),
        ("ns/conn", routes["conn"].revision): ("stable", {"connectFailure": 1}),
        ("ns/slow", routes["slow"].revision): ("stable", {"timeout": 1}),
    }
    assert set(arms) == set(expected)
    for key, (arm, outcomes) in expected.items():
        assert arms[key]["arm"] == arm, key
        assert arms[key]["outcomes"] == {**ZERO, **outcomes}, key

    canary_arm = arms[("ns/gpt", canary.revision)]
    assert canary_arm["latency"]["bounds"] == list(LATENCY_BOUNDS)
    assert sum(canary_arm["latency"]["counts"]) == 4  # every successful attempt
    assert canary_arm["ttft"]["bounds"] == list(TTFT_BOUNDS)
    assert sum(canary_arm["ttft"]["counts"]) == 1  # the streamed one
    assert sum(arms[("ns/rej", routes["rej"].revision)]["latency"]["counts"]) == 0  # failures: none

    report = report_from_json(document)
    assert report.arms[("ns/gpt", canary.revision)].failures == 4
    again = await read_observations(gateway)
    assert (again["instance"], again["startedAt"]) == (document["instance"], document["startedAt"])


async def test_routes_without_a_revision_are_not_observed(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        make_config([make_backend("ok", upstream.base("ok"))], [make_route("gpt", [("ok", 1)])]), {}
    )
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
    assert (await read_observations(gateway))["arms"] == []
