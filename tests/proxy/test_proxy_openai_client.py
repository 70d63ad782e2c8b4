"""The real `openai` client against the gateway, in front of real upstream servers.

Matrix: chat, streaming chat (with and without include_usage), completions (plain and
streaming), embeddings, models list and retrieve; errors mapped to the SDK's typed exceptions
(404 unknown model, 400 bad body, 401 client key, 413 body too large, 502, 503, 504, upstream
4xx passed through); routing headers on answers; token metrics.
"""

from __future__ import annotations

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from proxy_helpers import CLIENT_LABELLED, Gateway, Upstream, make_backend, make_config, make_route

from routeway.proxyconfig import hash_client_key


def client(gateway: Gateway, key: str = "anything") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=10)


def apply_simple(gateway: Gateway, upstream: Upstream, behaviour: str = "ok", **route_args: object) -> None:
    backend = make_backend("b1", upstream.base(behaviour), credential="ns/s/key")
    gateway.runtime.apply(
        make_config([backend], [make_route("gpt", [("b1", 1)], **route_args)]),  # type: ignore[arg-type]
        {"ns/s/key": "backend-secret"},
    )


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    if name in CLIENT_LABELLED:
        labels.setdefault("client", "")  # requests of no ModelClient
    value = gateway.runtime.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_chat_completion_is_routed_and_rewritten(gateway: Gateway, upstream: Upstream) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}]
        )
        answer = raw.parse()
    assert answer.choices[0].message.content == "hello there"
    assert answer.model == "b1-model"  # what the upstream saw and answered
    assert raw.headers["x-routeway-route"] == "ns/gpt"
    assert raw.headers["x-routeway-backend"] == "ns/b1"
    assert raw.headers["x-routeway-revision"] == gateway.runtime.config.revision  # type: ignore[union-attr]
    seen = upstream.seen[-1]
    assert seen.body["model"] == "b1-model"
    assert seen.headers["Authorization"] == "Bearer backend-secret"
    assert sample(gateway, "routeway_requests_total", route="ns/gpt", backend="ns/b1", code="200") == 1
    assert sample(gateway, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="prompt") == 5
    assert sample(gateway, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="completion") == 2


async def test_streaming_chat_strips_usage_the_client_did_not_ask_for(
    gateway: Gateway, upstream: Upstream
) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello"
    assert all(ch.choices for ch in chunks), "the usage-only chunk must not reach the client"
    assert upstream.seen[-1].body["stream_options"] == {"include_usage": True}
    assert sample(gateway, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="completion") == 3
    assert sample(gateway, "routeway_time_to_first_token_seconds_count", route="ns/gpt", backend="ns/b1") == 1


async def test_streaming_chat_keeps_usage_the_client_asked_for(gateway: Gateway, upstream: Upstream) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert sample(gateway, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="prompt") == 5


async def test_completions_plain_and_streaming(gateway: Gateway, upstream: Upstream) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        answer = await c.completions.create(model="gpt", prompt="hello")
        stream = await c.completions.create(model="gpt", prompt="hello", stream=True)
        texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert answer.choices[0].text == " world"
    assert "".join(texts) == "Hello"


async def test_embeddings(gateway: Gateway, upstream: Upstream) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        answer = await c.embeddings.create(model="gpt", input="hello")
    assert answer.data[0].embedding == [0.1, 0.2, 0.3]
    assert sample(gateway, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="prompt") == 3


async def test_models_list_and_retrieve(gateway: Gateway, upstream: Upstream) -> None:
    backend = make_backend("b1", upstream.base("ok"))
    gateway.runtime.apply(
        make_config([backend], [make_route("gpt", [("b1", 1)]), make_route("small", [("b1", 1)])]), {}
    )
    async with client(gateway) as c:
        models = await c.models.list()
        one = await c.models.retrieve("small")
        with pytest.raises(openai.NotFoundError) as missing:
            await c.models.retrieve("nope")
    assert [m.id for m in models.data] == ["gpt", "small"]
    assert one.id == "small"
    assert missing.value.code == "model_not_found"


async def test_unknown_model_is_404_model_not_found_without_a_label(
    gateway: Gateway, upstream: Upstream
) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        with pytest.raises(openai.NotFoundError) as error:
            await c.chat.completions.create(
                model="secret-user-model", messages=[{"role": "user", "content": "x"}]
            )
    assert error.value.code == "model_not_found"
    assert error.value.status_code == 404
    exposition = gateway.runtime.metrics.registry.collect()
    assert all("secret-user-model" not in str(s.labels) for family in exposition for s in family.samples)
    assert sample(gateway, "routeway_requests_total", route="", backend="", code="404") == 1


async def test_invalid_body_is_400(gateway: Gateway, upstream: Upstream) -> None:
    apply_simple(gateway, upstream)
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as error:
            await c.chat.completions.create(model="gpt", messages="not a list")  # type: ignore[arg-type]
    assert error.value.body["param"] == "messages"  # type: ignore[index]


async def test_client_keys_401_and_accept(gateway: Gateway, upstream: Upstream) -> None:
    backend = make_backend("b1", upstream.base("ok"))
    config = make_config([backend], [make_route("gpt", [("b1", 1)])], client_keys=("ns/keys/a", "ns/keys/b"))
    gateway.runtime.apply(
        config, {"ns/keys/a": hash_client_key("key-a"), "ns/keys/b": hash_client_key("key-b")}
    )
    async with client(gateway, "wrong") as c:
        with pytest.raises(openai.AuthenticationError) as error:
            await c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            await c.models.list()
    assert error.value.code == "invalid_api_key"
    assert error.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    async with client(gateway, "key-b") as c:
        answer = await c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert answer.choices
    assert "Authorization" not in upstream.seen[-1].headers  # the client key stays at the gateway


async def test_auth_fails_closed_when_the_key_secret_is_gone(gateway: Gateway, upstream: Upstream) -> None:
    """A gateway that configures auth but whose key Secret is missing renders no keys: every
    request is refused, never let through."""
    backend = make_backend("b1", upstream.base("ok"))
    config = make_config([backend], [make_route("gpt", [("b1", 1)])], require_client_key=True)
    gateway.runtime.apply(config, {})
    async with aiohttp.ClientSession() as session:
        for key in ("", "anything"):
            async with session.post(
                f"{gateway.v1}/chat/completions",
                json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {key}"} if key else {},
            ) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"]["code"] == "invalid_api_key"
    assert upstream.seen == []


async def test_body_over_limit_is_413(gateway: Gateway, upstream: Upstream) -> None:
    backend = make_backend("b1", upstream.base("ok"))
    gateway.runtime.apply(make_config([backend], [make_route("gpt", [("b1", 1)])], max_body_bytes=2000), {})
    async with client(gateway) as c:
        with pytest.raises(openai.APIStatusError) as error:
            await c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x" * 5000}])
    assert error.value.status_code == 413
    assert error.value.code == "request_too_large"
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("behaviour", "exception", "status"),
    [
        ("status-400", openai.BadRequestError, 400),
        ("status-422", openai.UnprocessableEntityError, 422),
        ("status-429", openai.RateLimitError, 429),
        ("status-500", openai.InternalServerError, 500),
        ("status-503", openai.InternalServerError, 503),
    ],
)
async def test_upstream_errors_reach_the_sdk_typed(
    gateway: Gateway, upstream: Upstream, behaviour: str, exception: type[openai.APIStatusError], status: int
) -> None:
    apply_simple(gateway, upstream, behaviour)
    async with client(gateway) as c:
        with pytest.raises(exception) as error:
            await c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == status
    assert error.value.code == f"u{status}"  # the upstream's own OpenAI error, unchanged
    assert error.value.response.headers["x-routeway-backend"] == "ns/b1"


async def test_gateway_errors_reach_the_sdk_typed(gateway: Gateway, upstream: Upstream) -> None:
    unreachable = make_backend("down", "http://127.0.0.1:9/v1")
    stalled = make_backend("slow", upstream.base("stall"), first_byte=0.2)
    gateway.runtime.apply(
        make_config(
            [unreachable, stalled],
            [
                make_route("down", [("down", 1)]),
                make_route("slow", [("slow", 1)]),
                make_route("empty", [("down", 0)]),
            ],
        ),
        {},
    )
    async with client(gateway) as c:
        with pytest.raises(openai.APIStatusError) as bad_gateway:
            await c.chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as timeout:
            await c.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.InternalServerError) as unavailable:
            await c.chat.completions.create(model="empty", messages=[{"role": "user", "content": "x"}])
    assert (bad_gateway.value.status_code, bad_gateway.value.code) == (502, "upstream_connect_error")
    assert "ns/down" in bad_gateway.value.message and "127.0.0.1" not in bad_gateway.value.message
    assert (timeout.value.status_code, timeout.value.code) == (504, "upstream_timeout")
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.headers["Retry-After"]
    assert unavailable.value.response.headers["x-routeway-route"] == "ns/empty"
