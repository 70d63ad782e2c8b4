"""What the mock model generates is bounded: any key holder can reach it (issue 14, item 9).

Matrix: the worst request of each endpoint that passes every bound (chat and completions,
streamed with usage and not, n = 1, 2 and 16 at the most tokens the total allows, prompt words
of control characters that JSON writes six bytes each; embeddings at the most numbers, floats
and base64) stays under `MAX_ANSWER_BYTES`; one over each bound (`max_tokens`,
`max_completion_tokens`, `n`, tokens x n, the backend default x n, `dimensions`, inputs,
inputs x dimensions) is a 400 naming the parameter; the backend's own defaults are clamped;
a word of the prompt longer than a token is cut; the issue's examples (a 1 KB request asking
for 100,000 tokens x 16, 64 inputs of 65,536 dimensions) are refused, by `mock_reply` and by
`routeway mock-backend` over a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import orjson
import pytest
from routeway_proxy.mock_model import (
    MAX_ANSWER_BYTES,
    MAX_CHOICES,
    MAX_EMBEDDING_DIMENSIONS,
    MAX_EMBEDDING_INPUTS,
    MAX_EMBEDDING_VALUES,
    MAX_GENERATED_TOKENS,
    MAX_TOKEN_CHARS,
    MAX_TOTAL_TOKENS,
    MockReply,
    generate_tokens,
    mock_reply,
)

from routeway.proxyconfig import MockBehaviour

FAST = MockBehaviour()
# 1 KB of prompt: long words of a character JSON escapes as \u0001 (six bytes per character)
HEAVY_PROMPT = " ".join(["\x01" * 100] * 10)


async def read_all(reply: MockReply) -> bytes:
    return b"".join([chunk async for chunk in reply.body])


def chat(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": HEAVY_PROMPT}], **extra}


async def refusal(kind: Any, body: dict[str, Any], behaviour: MockBehaviour = FAST) -> dict[str, Any]:
    reply = await mock_reply(kind, body, "m", behaviour)
    assert reply.status == 400, reply.status
    error: dict[str, Any] = orjson.loads(await read_all(reply))["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("kind", ["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("n", [1, 2, MAX_CHOICES])
async def test_the_largest_completion_stays_under_the_answer_bound(kind: str, stream: bool, n: int) -> None:
    tokens = min(MAX_GENERATED_TOKENS, MAX_TOTAL_TOKENS // n)
    fields = {"max_tokens": tokens, "n": n, "stream": stream, "stream_options": {"include_usage": True}}
    body = chat(**fields) if kind == "chat" else {"prompt": HEAVY_PROMPT, **fields}
    reply = await mock_reply(kind, body, "m", FAST)  # type: ignore[arg-type]
    assert reply.status == 200
    answer = await read_all(reply)
    assert answer.count(b"\\u0001" * MAX_TOKEN_CHARS) >= tokens  # the escaped words are in it
    assert len(answer) < MAX_ANSWER_BYTES


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("inputs", [MAX_EMBEDDING_VALUES // MAX_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_INPUTS])
async def test_the_largest_embeddings_stay_under_the_answer_bound(encoding: str, inputs: int) -> None:
    dimensions = min(MAX_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_VALUES // inputs)
    body = {
        "input": [f"text {i}" for i in range(inputs)],
        "dimensions": dimensions,
        "encoding_format": encoding,
    }
    reply = await mock_reply("embeddings", body, "m", FAST)
    assert reply.status == 200
    answer = await read_all(reply)
    assert len(orjson.loads(answer)["data"]) == inputs
    assert len(answer) < MAX_ANSWER_BYTES


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(max_tokens=MAX_GENERATED_TOKENS + 1), "max_tokens"),
        (chat(max_completion_tokens=MAX_GENERATED_TOKENS + 1), "max_completion_tokens"),
        (chat(n=MAX_CHOICES + 1), "n"),
        (chat(max_tokens=MAX_TOTAL_TOKENS // 3 + 1, n=3), "max_tokens"),
        (chat(max_tokens=100_000, n=16), "max_tokens"),  # the issue's 1 KB request for 200 MB
    ],
)
async def test_a_completion_over_a_bound_is_refused(body: dict[str, Any], param: str) -> None:
    assert (await refusal("chat", body))["param"] == param
    text_body = {"prompt": "x", **{k: v for k, v in body.items() if k != "messages"}}
    if param != "max_completion_tokens":  # a chat parameter only
        assert (await refusal("completions", text_body))["param"] == param


async def test_the_backend_default_counts_towards_the_total() -> None:
    """No `max_tokens` in the request: the backend's length times `n` is what is bounded."""
    behaviour = MockBehaviour(maxTokens=MAX_GENERATED_TOKENS)
    error = await refusal("chat", chat(n=3), behaviour)
    assert error["param"] == "n" and str(MAX_TOTAL_TOKENS) in error["message"]
    reply = await mock_reply("chat", chat(n=2), "m", behaviour)
    assert reply.status == 200


async def test_the_backend_defaults_are_clamped() -> None:
    """`routeway mock-backend --max-tokens` and `embeddingDimensions` are not bounded by a
    schema: the mock clamps them to its own bounds."""
    behaviour = MockBehaviour(maxTokens=10**7, embeddingDimensions=10**6)
    document = orjson.loads(await read_all(await mock_reply("chat", chat(), "m", behaviour)))
    assert document["usage"]["completion_tokens"] == MAX_GENERATED_TOKENS
    document = orjson.loads(await read_all(await mock_reply("embeddings", {"input": "x"}, "m", behaviour)))
    assert len(document["data"][0]["embedding"]) == MAX_EMBEDDING_DIMENSIONS


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "dimensions": MAX_EMBEDDING_DIMENSIONS + 1}, "dimensions"),
        ({"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1), "dimensions": 1}, "input"),
        ({"input": [[1, 2]] * (MAX_EMBEDDING_INPUTS + 1), "dimensions": 1}, "input"),
        (
            {"input": ["x"] * (MAX_EMBEDDING_VALUES // MAX_EMBEDDING_DIMENSIONS + 1), "dimensions": 3072},
            "input",
        ),
        ({"input": ["x"] * 64, "dimensions": 65_536}, "dimensions"),  # the issue's 92 MB
    ],
)
async def test_embeddings_over_a_bound_are_refused(body: dict[str, Any], param: str) -> None:
    assert (await refusal("embeddings", body))["param"] == param


async def test_embeddings_at_the_bound_pass() -> None:
    inputs = MAX_EMBEDDING_VALUES // MAX_EMBEDDING_DIMENSIONS
    body = {"input": ["x"] * inputs, "dimensions": MAX_EMBEDDING_DIMENSIONS}
    assert (await mock_reply("embeddings", body, "m", FAST)).status == 200


def test_a_long_word_makes_a_token_of_bounded_length() -> None:
    assert generate_tokens("a" * 1000 + " b", 3) == ["a" * MAX_TOKEN_CHARS, " b", " " + "a" * MAX_TOKEN_CHARS]


StartServer = Callable[..., Awaitable[str]]  # the `start_mock` fixture


async def test_the_standalone_mock_backend_refuses_the_issues_requests(start_mock: StartServer) -> None:
    """`routeway mock-backend` over a socket with the real SDK: the same bounds, as 400s the
    SDK raises as BadRequestError, and its own `--max-tokens` is clamped."""
    base = await start_mock(maxTokens=10**6)
    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="e", input=["x"] * 64, dimensions=65_536)
        assert refused.value.param == "dimensions"
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "w " * 500}], max_tokens=100_000, n=16
            )
        assert refused.value.param == "max_tokens"
        answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "w"}])
        assert answer.usage is not None and answer.usage.completion_tokens == MAX_GENERATED_TOKENS
    finally:
        await client.close()
