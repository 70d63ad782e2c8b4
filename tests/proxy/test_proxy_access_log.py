"""The request log line (`--access-log`, access_log.py) on the request path: the official
`openai` client, the gateway, real upstreams on loopback.

Matrix: a success (route, backend, model, tokens, no cost or cache for an unpriced, uncached
route); an upstream error (its status, the backend that gave it); a 401 (client "", no route);
a ModelClient's request (its name, cost and currency from a priced backend, equal to
`routeway_cost_total`); a streamed request (tokens from the stream's usage); a rollout's arm;
cache miss, hit and bypass; a line that fails to be written costs the request nothing (its
answer and its accounting record stay); a planted key and a URL query never in a line; no line without
an `AccessLog` (the flag off).

Request ids: every answer — success, stream, cache hit, upstream error, 401, 404, 405, 413,
the 503 before the first config, `/v1/models`, unknown paths — carries `x-request-id` and writes
exactly one line with the same id; a valid incoming id is kept, an invalid one (too long, a
space, a control or non-ASCII byte, empty) is replaced by a generated one, and generated ids
differ; header values other than the id never reach a line (a planted key in `Authorization`,
`api-key` and a custom header).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.access_log import ACCESS_LOGGER, AccessLog
from test_proxy_cache import apply_cached
from test_proxy_clients import KEY, PRICING, team, with_clients
from test_proxy_rollout import two_arm_config

from routeway.proxyconfig import hash_client_key

MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def lines(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The flag on: the gateway writes its lines to `routeway.access`, captured."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    gateway.runtime.metrics.access = AccessLog()
    return caplog


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert all(r.levelno == logging.INFO for r in records)
    return [orjson.loads(r.getMessage()) for r in records]


def client(gateway: Gateway, key: str = "anything", **options: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=10, **options)


def plain_config(upstream: Upstream, behaviour: str = "ok", **backend: Any) -> Any:
    return make_config(
        [make_backend("b1", upstream.base(behaviour), **backend)], [make_route("gpt", [("b1", 1)])]
    )


async def test_a_success(gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture) -> None:
    gateway.runtime.apply(plain_config(upstream), {})
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
    (line,) = access_lines(lines)
    assert line.pop("time").endswith("Z")
    assert line.pop("duration_ms") >= 0
    assert line.pop("request_id") == raw.headers["x-request-id"] != ""
    assert line == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "gpt",
        "route": "ns/gpt",
        "backend": "ns/b1",
        "client": "",
        "status": 200,
        "prompt_tokens": 5,
        "completion_tokens": 2,
    }


async def test_an_upstream_error(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    gateway.runtime.apply(plain_config(upstream, "status-503"), {})
    async with client(gateway) as c:
        with pytest.raises(openai.APIStatusError) as error:
            await c.chat.completions.create(model="gpt", messages=MESSAGES)
    (line,) = access_lines(lines)
    assert line["status"] == error.value.status_code == 503
    assert (line["route"], line["backend"], line["model"]) == ("ns/gpt", "ns/b1", "gpt")
    assert line["prompt_tokens"] is None and line["completion_tokens"] is None


async def test_a_401_has_no_client_and_never_the_key(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    config = with_clients(plain_config(upstream, pricing=PRICING), team("search"))
    gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key("sk-someone-else")})
    async with client(gateway, KEY) as c:
        with pytest.raises(openai.AuthenticationError):
            await c.chat.completions.create(model="gpt", messages=MESSAGES)
    (line,) = access_lines(lines)
    assert (line["status"], line["client"], line["route"], line["backend"], line["model"]) == (
        401,
        "",
        "",
        "",
        "",
    )
    assert KEY not in lines.text


async def test_a_clients_request_with_cost(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    config = with_clients(plain_config(upstream, pricing=PRICING), team("search"))
    gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key(KEY)})
    async with client(gateway, KEY, default_query={"note": "q-PLANTED"}) as c:
        await c.chat.completions.create(model="gpt", messages=MESSAGES)
    (line,) = access_lines(lines)
    cost = (5 * 1.5 + 2 * 6.0) / 1_000_000
    assert line["client"] == "ns/search" and line["status"] == 200
    assert line["cost"] == pytest.approx(cost) and line["currency"] == "USD"
    gateway.runtime.metrics.ledger.flush()
    counted = gateway.runtime.metrics.registry.get_sample_value(
        "routeway_cost_total",
        {"client": "ns/search", "route": "ns/gpt", "backend": "ns/b1", "currency": "USD"},
    )
    assert counted == pytest.approx(line["cost"])  # the same value the metric counts
    assert line["path"] == "/v1/chat/completions"
    for secret in (KEY, "q-PLANTED", "Bearer"):
        assert secret not in lines.text


async def test_a_stream_has_the_streams_usage(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    gateway.runtime.apply(plain_config(upstream), {})
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None
    (line,) = access_lines(lines)
    assert line["status"] == 200
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert line["completion_tokens"] > 0


async def test_a_rollouts_arm(gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture) -> None:
    gateway.runtime.apply(two_arm_config(upstream, 100), {})
    async with client(gateway) as c:
        await c.chat.completions.create(model="gpt", messages=MESSAGES)
    (line,) = access_lines(lines)
    assert (line["arm"], line["backend"], line["status"]) == ("canary", "ns/b", 200)


async def test_cache_miss_hit_and_bypass(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    apply_cached(gateway, upstream)
    async with client(gateway) as c:
        await c.chat.completions.create(model="gpt", messages=MESSAGES)
        await c.chat.completions.create(model="gpt", messages=MESSAGES)
        await c.chat.completions.create(
            model="gpt", messages=MESSAGES, extra_headers={"Cache-Control": "no-cache"}
        )
        await c.chat.completions.create(model="plain", messages=MESSAGES)
    miss, hit, bypass, plain = access_lines(lines)
    assert (miss["cache"], miss["backend"]) == ("miss", "ns/b1")
    assert (hit["cache"], hit["backend"], hit["status"], hit["route"]) == ("hit", "", 200, "ns/gpt")
    assert hit["prompt_tokens"] is None  # a hit spends no upstream tokens
    assert bypass["cache"] == "bypass"
    assert "cache" not in plain


async def test_no_line_without_the_flag(
    gateway: Gateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.runtime.apply(plain_config(upstream), {})
    async with client(gateway) as c:
        await c.chat.completions.create(model="gpt", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="nope", messages=MESSAGES)
    assert access_lines(caplog) == []


class BrokenAccessLog(AccessLog):
    @staticmethod
    def format(*args: Any) -> str:
        raise RuntimeError("planted")


async def test_a_line_that_fails_costs_the_request_nothing(
    gateway: Gateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.runtime.metrics.access = BrokenAccessLog()
    gateway.runtime.apply(plain_config(upstream), {})
    async with client(gateway) as c:
        answer = await c.chat.completions.create(model="gpt", messages=MESSAGES)
    assert answer.choices[0].message.content == "hello there"
    assert "writing the access log line failed" in caplog.text
    gateway.runtime.metrics.ledger.flush()
    labels = {"route": "ns/gpt", "backend": "ns/b1", "client": ""}
    registry = gateway.runtime.metrics.registry
    assert registry.get_sample_value("routeway_requests_total", {**labels, "code": "200"}) == 1
    assert registry.get_sample_value("routeway_tokens_total", {**labels, "type": "completion"}) == 2


PLANTED = "sk-planted-4f1c9e0d2b"
BODY = b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}'


async def answer_of(
    http: aiohttp.ClientSession, method: str, url: str, body: bytes | None = None, **headers: str
) -> tuple[int, str]:
    async with http.request(method, url, data=body, headers=headers) as response:
        await response.read()
        return response.status, response.headers.get("x-request-id", "")


async def test_every_answer_carries_its_id_and_writes_one_line(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    secret = {"Authorization": f"Bearer {PLANTED}", "api-key": PLANTED, "x-note": PLANTED}
    answers = []
    async with aiohttp.ClientSession() as http:
        answers.append(await answer_of(http, "POST", f"{gateway.v1}/chat/completions", BODY, **secret))
        answers.append(await answer_of(http, "GET", f"{gateway.v1}/models", **secret))
        config = with_clients(plain_config(upstream), team("search"))
        gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key(KEY)})
        auth = {"Authorization": f"Bearer {KEY}"}
        too_large = b'{"model": "gpt", "messages": [], "pad": "' + b"x" * (9 << 20) + b'"}'
        for method, path, body, headers in [
            ("POST", "/chat/completions", BODY, auth),  # 200
            ("POST", "/chat/completions", BODY, {"Authorization": f"Bearer {PLANTED}"}),  # 401
            ("GET", "/chat/completions", None, auth),  # 405
            ("POST", "/embeddings", too_large, auth),  # 413
            ("POST", "/chat/completions", BODY.replace(b'"gpt"', b'"nope"'), auth),  # 404 model
            ("GET", "/models", None, auth),  # 200
            ("GET", "/models/gpt", None, auth),  # 200
            ("POST", "/models", None, auth),  # 405
            ("GET", "/models", None, {"api-key": PLANTED}),  # 401
            ("GET", "/nowhere", None, auth),  # 404 path
        ]:
            answers.append(
                await answer_of(http, method, gateway.v1 + path, body, **headers, **{"x-note": PLANTED})
            )
        async with http.get(f"{gateway.url}/metrics/../x?key={PLANTED}") as response:
            await response.read()
            answers.append((response.status, response.headers.get("x-request-id", "")))
    statuses = [status for status, _ in answers]
    assert statuses == [503, 503, 200, 401, 405, 413, 404, 200, 200, 405, 401, 404, 404]
    logged = access_lines(lines)
    assert [(line["status"], line["request_id"]) for line in logged] == answers  # one each, same id
    assert len({rid for _, rid in answers}) == len(answers) and all(answers)  # generated, distinct
    assert PLANTED not in lines.text and KEY not in lines.text


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("trace-7f3a.b9:c/d+e=f@g_h", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ('quote"d', False),
        ("tab\there", False),
        ("", False),
        ("caf\u00e9", False),
    ],
)
async def test_an_incoming_request_id_is_kept_only_when_safe(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture, given: str, kept: bool
) -> None:
    gateway.runtime.apply(plain_config(upstream), {})
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway.v1}/chat/completions",
            data=BODY,
            headers={"x-request-id": given.encode("utf-8").decode("latin-1")},
        ) as response,
    ):
        await response.read()
        status, rid = response.status, response.headers["x-request-id"]
    assert status == 200
    (line,) = access_lines(lines)
    assert line["request_id"] == rid
    assert (rid == given) is kept
    if not kept:
        assert given not in lines.text or given == ""


async def test_streams_hits_and_errors_carry_the_id(
    gateway: Gateway, upstream: Upstream, lines: pytest.LogCaptureFixture
) -> None:
    apply_cached(gateway, upstream)
    ids = []
    async with client(gateway) as c:
        for _ in range(2):  # a miss, then a hit
            raw = await c.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
            ids.append(raw.headers["x-request-id"])
        async with c.chat.completions.with_streaming_response.create(
            model="plain", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "mine-1"}
        ) as streamed:
            async for _ in streamed.iter_lines():
                pass
            ids.append(streamed.headers["x-request-id"])
        with pytest.raises(openai.NotFoundError) as missing:
            await c.chat.completions.create(model="nope", messages=MESSAGES)
        ids.append(missing.value.response.headers["x-request-id"])
    assert ids[2] == "mine-1"
    assert [line["request_id"] for line in access_lines(lines)] == ids
    assert len(set(ids)) == 4
