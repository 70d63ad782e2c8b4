"""`mock_reply` on its own: every reply parsed with the real `openai` package's types.

Matrix: chat / completions / embeddings x streamed (with and without include_usage) / not;
deterministic text and vectors; request limits (max_tokens, max_completion_tokens, n,
dimensions, base64); 400 for each missing or invalid field; error_rate 0, 1 and seeded
fractions; waits happen inside the body iterator and stop on cancellation.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from routeway_proxy.mock_model import (
    MockReply,
    embed_text,
    error_random,
    generate_tokens,
    mock_reply,
)

from routeway.proxyconfig import MockBehaviour

FAST = MockBehaviour()


async def read_all(reply: MockReply) -> bytes:
    return b"".join([chunk async for chunk in reply.body])


async def read_json(reply: MockReply) -> Any:
    return orjson.loads(await read_all(reply))


async def read_events(reply: MockReply) -> list[bytes]:
    """Each SSE event's data, in order; every body item is whole events."""
    events: list[bytes] = []
    async for chunk in reply.body:
        assert chunk.endswith(b"\n\n")
        for event in chunk.split(b"\n\n")[:-1]:
            assert event.startswith(b"data: ")
            events.append(event[len(b"data: ") :])
    return events


def chat(prompt: str = "tell me a story", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}


def test_generated_text_cycles_the_prompt_words() -> None:
    assert "".join(generate_tokens("a b c", 5)) == "a b c a b"
    assert generate_tokens("", 2) == ["mock", " mock"]
    assert generate_tokens("x", 0) == []


async def test_chat_reply_is_a_chat_completion() -> None:
    reply = await mock_reply("chat", chat("hello there world"), "served-model", FAST)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    completion = ChatCompletion.model_validate(await read_json(reply))
    assert completion.object == "chat.completion"
    assert completion.model == "served-model"
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(generate_tokens("hello there world", 16))
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 16
    assert completion.usage.total_tokens == 19


async def test_chat_prompt_joins_all_messages_and_text_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "two words"}, {"type": "image_url"}]},
        ],
        "max_tokens": 4,
    }
    completion = ChatCompletion.model_validate(await read_json(await mock_reply("chat", body, "m", FAST)))
    assert completion.choices[0].message.content == "be brief two words"
    assert completion.choices[0].finish_reason == "length"


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
async def test_request_limit_sets_length(limit: str) -> None:
    reply = await mock_reply("chat", chat("a b", **{limit: 3}), "m", MockBehaviour(maxTokens=50))
    completion = ChatCompletion.model_validate(await read_json(reply))
    assert completion.choices[0].message.content == "a b a"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_behaviour_max_tokens_is_the_default_length() -> None:
    reply = await mock_reply("chat", chat("w"), "m", MockBehaviour(maxTokens=2))
    completion = ChatCompletion.model_validate(await read_json(reply))
    assert completion.choices[0].message.content == "w w"


async def test_n_choices() -> None:
    completion = ChatCompletion.model_validate(
        await read_json(await mock_reply("chat", chat("x", n=3, max_tokens=2), "m", FAST))
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage is not None and completion.usage.completion_tokens == 6


async def test_chat_stream_without_usage() -> None:
    reply = await mock_reply("chat", chat("one two", stream=True, max_tokens=5), "m", FAST)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/event-stream"
    events = await read_events(reply)
    assert events[-1] == b"[DONE]"
    raw = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in chunk for chunk in raw)
    chunks = [ChatCompletionChunk.model_validate(c) for c in raw]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "one two one two one"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len(chunks) == 1 + 5 + 1


async def test_chat_stream_with_usage_ends_with_a_usage_chunk() -> None:
    body = chat("one two", stream=True, stream_options={"include_usage": True})
    events = await read_events(await mock_reply("chat", body, "m", FAST))
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (2, 16, 18)
    assert all(c.usage is None for c in content)
    assert all(b'"usage":null' in e for e in events[:-2])
    assert content[-1].choices[0].finish_reason == "stop"


async def test_text_completion() -> None:
    reply = await mock_reply("completions", {"prompt": "say this", "max_tokens": 3}, "m", FAST)
    completion = Completion.model_validate(await read_json(reply))
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "say this say"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.total_tokens == 5


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2, 3], [[1, 2], [3]]])
async def test_text_completion_prompt_forms(prompt: Any) -> None:
    reply = await mock_reply("completions", {"prompt": prompt}, "m", FAST)
    assert reply.status == 200
    Completion.model_validate(await read_json(reply))


async def test_text_completion_stream() -> None:
    body = {"prompt": "p q", "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    events = await read_events(await mock_reply("completions", body, "m", FAST))
    assert events[-1] == b"[DONE]"
    # Streamed legacy completions carry `finish_reason: null` until the end, which the SDK's
    # `Completion` type (built for whole replies) only accepts without validation.
    raw = [orjson.loads(e) for e in events[:-1]]
    *content, finish, last = raw
    for chunk in content:
        assert chunk["choices"][0]["finish_reason"] is None
        Completion.model_validate({**chunk, "choices": [{**chunk["choices"][0], "finish_reason": "stop"}]})
    assert all(c["object"] == "text_completion" for c in raw)
    assert "".join(c["choices"][0]["text"] for c in content) == "p q"
    assert Completion.model_validate(finish).choices[0].finish_reason == "length"
    usage_chunk = Completion.model_validate(last)
    assert (
        usage_chunk.choices == []
        and usage_chunk.usage is not None
        and usage_chunk.usage.completion_tokens == 2
    )


async def test_embeddings_single_and_list() -> None:
    behaviour = MockBehaviour(embeddingDimensions=5)
    one = CreateEmbeddingResponse.model_validate(
        await read_json(await mock_reply("embeddings", {"input": "cat"}, "emb", behaviour))
    )
    assert one.object == "list" and one.model == "emb"
    assert [d.index for d in one.data] == [0]
    assert one.data[0].object == "embedding"
    assert one.data[0].embedding == embed_text("cat", 5)
    assert one.usage.prompt_tokens == 1 and one.usage.total_tokens == 1

    many = CreateEmbeddingResponse.model_validate(
        await read_json(await mock_reply("embeddings", {"input": ["cat", "dog", "cat"]}, "emb", behaviour))
    )
    vectors = [d.embedding for d in many.data]
    assert len(vectors) == 3 and all(len(v) == 5 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(x * x for x in vectors[1]) - 1.0) < 1e-9


async def test_embeddings_dimensions_and_base64() -> None:
    body = {"input": "cat", "dimensions": 3, "encoding_format": "base64"}
    document = await read_json(await mock_reply("embeddings", body, "emb", FAST))
    decoded = struct.unpack("<3f", base64.b64decode(document["data"][0]["embedding"]))
    assert decoded == pytest.approx(embed_text("cat", 3), abs=1e-6)


async def test_embeddings_ignore_stream() -> None:
    reply = await mock_reply("embeddings", {"input": "x", "stream": True}, "emb", FAST)
    assert reply.headers["Content-Type"] == "application/json"
    CreateEmbeddingResponse.model_validate(await read_json(reply))


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        ("chat", {}, "messages"),
        ("chat", {"messages": []}, "messages"),
        ("chat", {"messages": "hi"}, "messages"),
        ("chat", {"messages": [{"content": "no role"}]}, "messages"),
        ("chat", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        (
            "chat",
            {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "5"},
            "max_completion_tokens",
        ),
        ("chat", {"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ("chat", {"messages": [{"role": "user", "content": "x"}], "stream_options": 1}, "stream_options"),
        ("completions", {}, "prompt"),
        ("completions", {"prompt": []}, "prompt"),
        ("completions", {"prompt": 7}, "prompt"),
        ("embeddings", {}, "input"),
        ("embeddings", {"input": [{"text": "x"}]}, "input"),
        ("embeddings", {"input": "x", "dimensions": 0}, "dimensions"),
        ("embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_invalid_requests_are_400(kind: Any, body: dict[str, Any], param: str) -> None:
    reply = await mock_reply(kind, body, "m", MockBehaviour(errorRate=1.0))
    assert reply.status == 400
    error = (await read_json(reply))["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["code"]


@pytest.mark.parametrize("stream", [False, True])
async def test_error_rate_one_always_fails(stream: bool) -> None:
    reply = await mock_reply("chat", chat(stream=stream), "m", MockBehaviour(errorRate=1.0))
    assert reply.status == 500
    assert reply.headers["Content-Type"] == "application/json"
    assert (await read_json(reply))["error"] == {
        "message": "The mock model failed on purpose (errorRate).",
        "type": "server_error",
        "param": None,
        "code": "mock_error",
    }


async def test_error_rate_fraction_is_seedable() -> None:
    behaviour = MockBehaviour(errorRate=0.25)

    async def statuses() -> list[int]:
        return [(await mock_reply("chat", chat(), "m", behaviour)).status for _ in range(400)]

    error_random.seed(7)
    first = await statuses()
    error_random.seed(7)
    assert await statuses() == first
    assert 60 <= first.count(500) <= 140
    assert set(first) == {200, 500}


@pytest.mark.parametrize(
    ("body", "knobs"),
    [
        (chat(), {"latency": 3600}),
        (chat(stream=True), {"timeToFirstToken": 3600}),
        (chat(stream=True), {"tokensPerSecond": 1 / 3600}),
        (chat(), {"latency": 3600, "errorRate": 1.0}),
    ],
)
async def test_waits_are_in_the_body_and_cancellable(body: dict[str, Any], knobs: dict[str, float]) -> None:
    # mock_reply itself returns at once (status and headers are known); the wait is in the body.
    reply = await asyncio.wait_for(mock_reply("chat", body, "m", MockBehaviour.model_validate(knobs)), 30)
    reader = asyncio.ensure_future(read_all(reply))
    await asyncio.sleep(0.01)
    assert not reader.done()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
