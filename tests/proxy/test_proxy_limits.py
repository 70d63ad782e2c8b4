"""Limits on the request path, through the gateway with the official `openai` client.

Covers: a burst of 20 concurrent requests (max_tokens 1000) against a route's 5,000 tokens a
minute admits at most 5 and the settled use stays within 5,000; settlement from the upstream's
real usage frees what was reserved (documents, and streams whose usage the gateway asked for
without showing it to a client that did not ask); an upstream error settles 0 tokens; the
`x-ratelimit-*` headers on successes, errors and streams, none on an unlimited route; the 429
`rate_limit_exceeded` shape with `Retry-After` and the rejection metric; client and route
limits reserved all-or-nothing; a burst of a real ModelClient (its key) against its own
budget, while a gateway-wide key and an unlimited client pass without headers; a
Redis store behind a password from the credential store, then Redis killed: FailOpen serves,
FailClosed answers 503 `rate_limit_unavailable`, each counted in the store-failure metric; a
limited client's 400, 413, 403 and 404 (refused before the limit stage) carry its budgets'
headers, unchanged by those refusals, and an unlimited client's carry none.

The limits' clock is a fake one that never moves, so budgets refill only when a test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
import redis
from aiohttp import web
from proxy_helpers import (
    FakeClock,
    Gateway,
    Upstream,
    chat_document,
    make_backend,
    make_config,
    make_route,
    start_site,
)
from redis_server import RedisServer, running_redis
from routeway_proxy.app import create_admin_app, create_proxy_app
from routeway_proxy.errors import ProxyError
from routeway_proxy.limits.estimate import estimate_tokens
from routeway_proxy.pipeline import limit
from routeway_proxy.runtime import ProxyRuntime

from routeway.proxyconfig import (
    ClientConfig,
    ClientLimits,
    GatewayLimits,
    ProxyConfig,
    RouteLimits,
    hash_client_key,
)

MESSAGES = [{"role": "user", "content": "hi"}]
PROBE = {"model": "chat", "messages": MESSAGES, "max_tokens": 0}
PROBE_TOKENS = estimate_tokens(PROBE)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """The gateway with a frozen limits clock (unix second 1,000,000)."""
    clock = FakeClock()
    limits_clock = FakeClock()
    limits_clock.now = 1_000_000.0
    runtime = ProxyRuntime(clock=clock, limits_clock=limits_clock)
    runner, url = await start_site(create_proxy_app(runtime))
    admin_runner, admin_url = await start_site(create_admin_app(runtime))
    yield Gateway(url, admin_url, runtime, clock)
    await runner.cleanup()
    await admin_runner.cleanup()


class HeldUpstream:
    """Answers chat requests with `usage` once `release` is set; counts those waiting."""

    def __init__(self, usage: tuple[int, int]) -> None:
        self.usage = usage
        self.waiting = 0
        self.release = asyncio.Event()
        self.all_decided = asyncio.Event()  # 20 requests either refused or waiting here
        self._decided = 0
        self.url = ""

    def decided(self, *_: object) -> None:
        self._decided += 1
        if self._decided == 20:
            self.all_decided.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.waiting += 1
        self.decided()
        await self.release.wait()
        document = chat_document(body["model"])
        prompt, completion = self.usage
        document["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
        return web.json_response(document)


@pytest.fixture
async def held() -> AsyncIterator[HeldUpstream]:
    state = HeldUpstream((10, 1000))
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.handle)
    runner, url = await start_site(app)
    state.url = url + "/v1"
    yield state
    state.release.set()
    await runner.cleanup()


def limited(
    url: str, *, rpm: int | None = None, tpm: int | None = None, gateway_limits: GatewayLimits | None = None
) -> ProxyConfig:
    route = make_route("chat", [("b", 1)]).model_copy(
        update={"limits": RouteLimits(requestsPerMinute=rpm, tokensPerMinute=tpm)}
    )
    free = make_route("free", [("b", 1)])
    config = make_config([make_backend("b", url)], [route, free])
    if gateway_limits is not None:
        config = config.model_copy(
            update={"gateway": config.gateway.model_copy(update={"limits": gateway_limits})}
        )
    return config.with_revision()


def client_of(gateway: Gateway, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


async def remaining_tokens(gateway: Gateway) -> int:
    """What is left of the route's token budget, read from a probe's headers (the probe's own
    reservation added back)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=PROBE) as response,
    ):
        assert response.status == 200, await response.text()
        return int(response.headers["x-ratelimit-remaining-tokens"]) + PROBE_TOKENS


async def metric(gateway: Gateway, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin_url}/metrics") as response:
        text = await response.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def burst(client: openai.AsyncOpenAI, held: HeldUpstream) -> list[int]:
    """20 concurrent requests of max_tokens 1000, answered once each was refused or is held."""

    async def one() -> int:
        try:
            await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
        except openai.RateLimitError as error:
            assert error.code == "rate_limit_exceeded"
            return 429
        return 200

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    for task in tasks:
        task.add_done_callback(held.decided)  # refused: done at once; admitted: held upstream
    await held.all_decided.wait()
    held.release.set()
    return list(await asyncio.gather(*tasks))


async def test_a_burst_cannot_overshoot_the_token_budget(gateway: Gateway, held: HeldUpstream) -> None:
    gateway.runtime.apply(limited(held.url, tpm=5000), {})
    async with client_of(gateway) as client:
        codes = await burst(client, held)
    admitted = codes.count(200)
    assert 1 <= admitted <= 5
    assert codes.count(429) == 20 - admitted
    settled = admitted * sum(held.usage)
    assert settled <= 5000
    assert await remaining_tokens(gateway) == 5000 - settled
    labels = {"client": "", "route": "ns/chat", "limit": "tokensPerMinute"}
    assert await metric(gateway, "routeway_ratelimit_rejections_total", **labels) == 20 - admitted


async def test_a_clients_burst_against_its_own_budget(gateway: Gateway, held: HeldUpstream) -> None:
    """Real ModelClients and keys: `ns/team` has 5,000 tokens a minute; a gateway-wide key and
    `ns/other` (no limits) are not limited on the same route, and get no headers."""
    route = make_route("chat", [("b", 1)])
    team = ClientConfig(id="ns/team", keyRef="ns/team/key", limits=ClientLimits(tokensPerMinute=5000))  # type: ignore[call-arg]
    other = ClientConfig(id="ns/other", keyRef="ns/other/key")  # type: ignore[call-arg]
    config = make_config([make_backend("b", held.url)], [route], client_keys=("ns/gw/key",))
    gateway_config = config.gateway.model_copy(update={"clients": (other, team)})
    config = config.model_copy(update={"gateway": gateway_config}).with_revision()
    keys = {"ns/team/key": "team-key", "ns/other/key": "other-key", "ns/gw/key": "gateway-key"}
    gateway.runtime.apply(config, {ref: hash_client_key(key) for ref, key in keys.items()})
    async with client_of(gateway, "team-key") as client:
        codes = await burst(client, held)
        admitted = codes.count(200)
        assert 1 <= admitted <= 5
        assert admitted * sum(held.usage) <= 5000
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
        assert "client ns/team" in refused.value.message
    labels = {"client": "ns/team", "route": "", "limit": "tokensPerMinute"}
    assert await metric(gateway, "routeway_ratelimit_remaining", **labels) < 1000
    labels["route"] = "ns/chat"
    assert await metric(gateway, "routeway_ratelimit_rejections_total", **labels) == 21 - admitted
    for key in ("gateway-key", "other-key"):
        async with client_of(gateway, key) as client:
            for _ in range(6):
                raw = await client.chat.completions.with_raw_response.create(
                    model="chat",
                    messages=MESSAGES,
                    max_tokens=1000,  # type: ignore[arg-type]
                )
                assert not [name for name in raw.headers if name.startswith("x-ratelimit")]


async def test_settlement_from_real_usage_frees_the_reservation(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(limited(upstream.base("ok"), tpm=5000), {})
    async with client_of(gateway) as client:
        for _ in range(10):  # each reserves ~1,008 tokens and uses 7: without settlement 4 pass
            await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
        assert await remaining_tokens(gateway) == 5000 - 10 * 7


async def test_a_stream_settles_from_the_usage_the_gateway_asked_for(
    gateway: Gateway, upstream: Upstream
) -> None:
    gateway.runtime.apply(limited(upstream.base("ok"), tpm=5000), {})
    async with client_of(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=MESSAGES,
            max_tokens=1000,
            stream=True,  # type: ignore[arg-type]
        )
        assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
        reserved = estimate_tokens({"messages": MESSAGES, "max_tokens": 1000})
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(5000 - reserved)
        chunks = [chunk async for chunk in raw.parse()]
        assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
        assert upstream.seen[-1].body["stream_options"] == {"include_usage": True}
        assert await remaining_tokens(gateway) == 5000 - 8  # the upstream's usage: 5 + 3

        stream = await client.chat.completions.create(
            model="chat",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in [c async for c in stream] if chunk.usage is not None]
        assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(5, 3)]
        assert await remaining_tokens(gateway) == 5000 - 8 - 7 - 8  # the first probe used 5 + 2


async def test_headers_on_every_answer_and_the_429_shape(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(limited(upstream.base("ok"), rpm=3, tpm=100_000), {})
    async with client_of(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        headers = raw.headers
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == "2"
        assert headers["x-ratelimit-reset-requests"] == "20s"  # one request of 3 a minute
        assert headers["x-ratelimit-limit-tokens"] == "100000"
        reserved = estimate_tokens({"messages": MESSAGES})  # the default of 1,024 output tokens
        assert headers["x-ratelimit-remaining-tokens"] == str(100_000 - reserved)
        assert "retry-after" not in headers

        # an upstream error: the headers too, and nothing spent (settled 0)
        gateway.runtime.apply(limited(upstream.base("status-400"), rpm=3, tpm=100_000), {})
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert bad.value.response.headers["x-ratelimit-remaining-requests"] == "1"
        assert bad.value.response.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 7 - reserved)

        gateway.runtime.apply(limited(upstream.base("ok"), rpm=3, tpm=100_000), {})
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        # the error gave its tokens back: only the first request's usage (7) is spent
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(100_000 - 7 - reserved)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        error = refused.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        assert error.type == "requests"
        assert "route ns/chat" in error.message and "requests per min (RPM): Limit 3" in error.message
        assert error.response.headers["Retry-After"] == "20"
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert (
            await metric(
                gateway,
                "routeway_ratelimit_rejections_total",
                client="",
                route="ns/chat",
                limit="requestsPerMinute",
            )
            == 1
        )
        assert (
            await metric(
                gateway, "routeway_ratelimit_remaining", client="", route="ns/chat", limit="requestsPerMinute"
            )
            == 0
        )

        # a route without limits: no headers
        raw = await client.chat.completions.with_raw_response.create(model="free", messages=MESSAGES)  # type: ignore[arg-type]
        assert not [name for name in raw.headers if name.startswith("x-ratelimit")]

        # an error of the gateway's own (no backend reachable): the headers as well
        gateway.runtime.apply(limited("http://127.0.0.1:1/v1", rpm=10, tpm=100_000), {})
        with pytest.raises(openai.InternalServerError) as unreachable:
            await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert unreachable.value.status_code == 502
        assert unreachable.value.response.headers["x-ratelimit-remaining-requests"] == "6"


async def test_client_and_route_limits_are_reserved_all_or_nothing(
    gateway: Gateway, upstream: Upstream
) -> None:
    """The stage takes the caller's id and limits (authentication passes them in)."""
    gateway.runtime.apply(limited(upstream.base("ok"), tpm=3100), {})
    table = gateway.runtime.table
    assert table is not None
    route = table.routes["chat"]
    limits = gateway.runtime.limits
    team = ClientLimits(tokensPerDay=2500)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 1000}
    first = await limit.reserve(limits, route, body, "ns/team", team)
    second = await limit.reserve(limits, route, body, "ns/team", team)
    assert first is not None and second is not None
    with pytest.raises(ProxyError) as refused:  # the client's day: 2,016 of 2,500 taken
        await limit.reserve(limits, route, body, "ns/team", team)
    assert refused.value.status == 429 and "client ns/team" in refused.value.message
    # the refusal took nothing from the route: another client gets its last ~1,000 tokens
    assert await limit.reserve(limits, route, body, "ns/other", team) is not None
    with pytest.raises(ProxyError) as route_full:
        await limit.reserve(limits, route, body, "ns/third", team)
    assert "route ns/chat" in route_full.value.message
    await first.settle(0)  # a request that got no tokens gives its reservation back
    assert await limit.reserve(limits, route, body, "ns/team", team) is not None


async def test_without_redis_each_pod_enforces_its_share(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(
        limited(upstream.base("ok"), rpm=1000, gateway_limits=GatewayLimits(replicas=4)), {}
    )
    async with client_of(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-limit-requests"] == "250"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def test_redis_store_and_its_failure_modes(
    gateway: Gateway, upstream: Upstream, redis_server: RedisServer
) -> None:
    password = "redis-pass-6d1f"  # a test credential
    admin = redis.Redis(port=redis_server.port)
    admin.config_set("requirepass", password)
    admin.close()

    def config(mode: str) -> ProxyConfig:
        settings = GatewayLimits(
            redisUrl=redis_server.url,
            redisPasswordRef="ns/redis/password",
            onRedisFailure=mode,
            replicas=3,  # no division: Redis shares the limit between the pods
        )  # type: ignore[arg-type]
        return limited(upstream.base("ok"), rpm=1000, gateway_limits=settings)

    credentials = {"ns/redis/password": password}
    gateway.runtime.apply(config("FailOpen"), credentials)
    async with client_of(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-remaining-requests"] == "999"
        checker = redis.Redis(port=redis_server.port, password=password)
        assert checker.keys("routeway:{limits}:*")  # the budget lives in Redis
        checker.close()

        redis_server.kill()
        await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert (
            await metric(
                gateway, "routeway_ratelimit_store_failures_total", store="redis", outcome="admitted"
            )
            == 1
        )

        gateway.runtime.apply(config("FailClosed"), credentials)
        with pytest.raises(openai.InternalServerError) as refused:
            await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert refused.value.code == "rate_limit_unavailable"
        assert refused.value.response.headers["Retry-After"] == "1"
        assert (
            await metric(
                gateway, "routeway_ratelimit_store_failures_total", store="redis", outcome="rejected"
            )
            == 1
        )
        async with aiohttp.ClientSession() as session:  # the password never shows on the admin port
            for path in ("/config", "/routes", "/metrics"):
                async with session.get(gateway.admin_url + path) as response:
                    assert password not in await response.text()


def cached_limited(url: str) -> ProxyConfig:
    from routeway.proxyconfig import CacheConfig

    config = limited(url, tpm=5000)
    routes = [
        r.model_copy(update={"cache": CacheConfig(ttl=600, maxBytes=1 << 20)}) if r.model == "chat" else r
        for r in config.routes
    ]
    return config.model_copy(update={"routes": tuple(routes)}).with_revision()


async def test_a_request_failing_between_reservation_and_upstream_is_settled(
    gateway: Gateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 13: whatever fails after the reservation and before the upstream
    attempt (here the cache stage) releases the reservation instead of leaving it charged."""
    from routeway_proxy.pipeline import cache as cache_stage

    gateway.runtime.apply(cached_limited(upstream.base("ok")), {})

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the cache stage failed")

    monkeypatch.setattr(cache_stage, "lookup", broken)
    async with client_of(gateway) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1000)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert await remaining_tokens(gateway) == 5000  # nothing spent; the probe itself is added back


async def test_a_deeply_nested_body_does_not_break_the_cache_key(
    gateway: Gateway, upstream: Upstream
) -> None:
    """Review of issue 13: the cache key's canonical form recursed past Python's limit on a
    body the parser accepts (1,024 levels): a RecursionError between reservation and upstream,
    the reservation left charged. Since issue 14 (item 4) such a body is refused at admission,
    before the cache and the limits: 400 `invalid_json`, no cache header, nothing reserved."""
    gateway.runtime.apply(cached_limited(upstream.base("ok")), {})
    depth = 900
    raw = b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":1000,"metadata":{"x":'
    raw += b"[" * depth + b"]" * depth + b"}}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions", data=raw, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_json"
        assert "x-routeway-cache" not in response.headers
    assert await remaining_tokens(gateway) == 5000


async def test_a_cache_hit_is_not_refused_by_a_token_limit(gateway: Gateway, upstream: Upstream) -> None:
    """Issue 13: "a hit costs no upstream tokens and counts against request limits but not
    token limits". A repeated request whose answer is cached is served even when the token
    budget has no room left for its estimate; it still counts as a request."""
    config = cached_limited(upstream.base("ok"))
    routes = [
        r.model_copy(update={"limits": RouteLimits(requestsPerMinute=3, tokensPerMinute=60)})
        if r.model == "chat"
        else r
        for r in config.routes
    ]
    gateway.runtime.apply(config.model_copy(update={"routes": tuple(routes)}).with_revision(), {})
    async with client_of(gateway) as client:

        async def ask(content: str) -> Any:
            return await client.chat.completions.with_raw_response.create(
                model="chat",
                messages=[{"role": "user", "content": content}],
                max_tokens=40,  # type: ignore[arg-type]
            )

        first = await ask("hi")  # reserves ~48 of 60, settles at 7
        assert first.headers["x-routeway-cache"] == "miss"
        await ask("hello")  # reserves ~49: 56 of 60, settles at 14
        with pytest.raises(openai.RateLimitError):
            await ask("other")  # a miss: 14 + ~49 is over 60
        again = await ask("hi")  # the same question: a hit, which spends no tokens
        assert again.headers["x-routeway-cache"] == "hit"
        assert again.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as refused:  # request limit: hits count
            await ask("hi")
        assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(upstream.seen) == 2


async def test_refusals_before_the_limit_stage_carry_the_clients_budget(
    gateway: Gateway, upstream: Upstream
) -> None:
    """A limited ModelClient's 400 (bad body), 413, 403 `model_not_allowed` and 404
    `model_not_found` carry its budgets' `x-ratelimit-*` headers as they stand — read, not
    reserved, so the remaining values do not move — with the openai client and raw aiohttp; an
    unlimited client's refusals carry none. Only the client's budgets: the route's limits (here
    tighter) are not known before routing."""
    route = make_route("chat", [("b", 1)]).model_copy(
        update={"limits": RouteLimits(requestsPerMinute=2, tokensPerMinute=3000)}
    )
    team = ClientConfig(  # type: ignore[call-arg]
        id="ns/team",
        keyRef="ns/team/key",
        models=("chat", "unserved"),
        limits=ClientLimits(requestsPerMinute=10, tokensPerMinute=50_000),
    )
    other = ClientConfig(id="ns/other", keyRef="ns/other/key", models=("chat", "unserved"))  # type: ignore[call-arg]
    config = make_config([make_backend("b", upstream.base("ok"))], [route], max_body_bytes=2000)
    config = config.model_copy(
        update={
            "gateway": config.gateway.model_copy(update={"clients": (team, other), "requireClientKey": True})
        }
    ).with_revision()
    keys = {"ns/team/key": "team-key", "ns/other/key": "other-key"}
    gateway.runtime.apply(config, {ref: hash_client_key(key) for ref, key in keys.items()})
    url = f"{gateway.v1}/chat/completions"

    async def refusals(key: str) -> list[tuple[int, str, dict[str, str]]]:
        answers = []
        auth = {"Authorization": f"Bearer {key}"}
        bodies: list[dict[str, Any]] = [
            {"data": b"{not json", "headers": {**auth, "Content-Type": "application/json"}},
            {
                "json": {"model": "chat", "messages": [{"role": "user", "content": "x" * 3000}]},
                "headers": auth,
            },
            {"json": {"model": "secret", "messages": MESSAGES}, "headers": auth},
            {"json": {"model": "unserved", "messages": MESSAGES}, "headers": auth},
        ]
        async with aiohttp.ClientSession() as session:
            for request in bodies:
                async with session.post(url, **request) as response:
                    code = (await response.json())["error"]["code"]
                    answers.append((response.status, code, dict(response.headers)))
        return answers

    async with client_of(gateway, "team-key") as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        # the admitted request reports the tightest budgets: the route's
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        answers = await refusals("team-key")
        assert [(status, code) for status, code, _ in answers] == [
            (400, answers[0][1]),
            (413, answers[1][1]),
            (403, "model_not_allowed"),
            (404, "model_not_found"),
        ]
        for status, _, headers in answers:
            assert headers["x-ratelimit-limit-requests"] == "10", status  # the client's, not the route's
            assert headers["x-ratelimit-remaining-requests"] == "9", status  # unchanged by the refusals
            assert headers["x-ratelimit-limit-tokens"] == "50000", status
            assert headers["x-ratelimit-remaining-tokens"] == str(50_000 - 7), status  # the settled usage
            assert headers["x-ratelimit-reset-requests"] == "6s", status
            assert "Retry-After" not in headers, status
        # the openai client sees them too
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="secret", messages=MESSAGES)  # type: ignore[arg-type]
        assert denied.value.response.headers["x-ratelimit-remaining-requests"] == "9"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="unserved", messages=MESSAGES)  # type: ignore[arg-type]
        assert missing.value.response.headers["x-ratelimit-remaining-tokens"] == str(50_000 - 7)
        # nothing was reserved by any refusal: the route's last request is still free
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    answers = await refusals("other-key")
    assert [status for status, _, _ in answers] == [400, 413, 403, 404]
    for _, _, headers in answers:
        assert not [name for name in headers if name.lower().startswith("x-ratelimit")]
    # decided (README, Limits): answers with no known client carry no client budget — a 401
    # (an unknown key is nobody's, whichever client it resembles) and a 405 (no model call,
    # refused before the key is read) — even on a gateway whose clients are limited
    async with aiohttp.ClientSession() as session:
        outside = []
        for method, key in (("POST", "team-key-but-longer"), ("POST", "team-ke"), ("GET", "team-key")):
            request = session.request(
                method,
                url,
                json={"model": "chat", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
            )
            async with request as response:
                await response.read()
                outside.append((response.status, dict(response.headers)))
    assert [status for status, _ in outside] == [401, 401, 405]
    for _, headers in outside:
        assert not [name for name in headers if name.lower().startswith("x-ratelimit")]
