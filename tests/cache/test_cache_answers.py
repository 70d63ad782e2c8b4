"""Which answers are stored, and streamed answers assembled into documents
(`routeway_proxy.cache.answers`).

Matrix: non-streamed answers of the `mock` provider (chat, completions, embeddings; stop and
length) stored with their usage · never stored: non-200, finish_reason tool_calls /
content_filter, a tool-call message, an error document, empty choices or data, logprobs ·
streams captured from the `mock` provider (chat with and without usage, n=2, completions,
fed whole and byte by byte) assembled into the same answer as the non-streamed one · an
OpenAI-shaped stream (CRLF, `obfuscation`, `usage: null`, `service_tier`) · never stored
from a stream: cut (no `[DONE]`), an error event, a tool-call delta, content_filter, data
after `[DONE]`, beyond `max_bytes` · the shared tier's encoding round trip.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cache_helpers import capture_mock, chat_body
from routeway_proxy.cache.answers import StoredAnswer, StreamAssembler, storable_answer
from routeway_proxy.cache.key import CacheKind


def assemble(
    kind: CacheKind, stream: bytes, step: int | None = None, max_bytes: int = 1 << 20
) -> StoredAnswer | None:
    assembler = StreamAssembler(kind, max_bytes)
    size = step or len(stream)
    for start in range(0, len(stream), size):
        assembler.feed(stream[start : start + size])
    return assembler.result()


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", chat_body()),
        ("chat", chat_body(max_tokens=3)),  # finish_reason "length"
        ("completions", {"model": "m", "prompt": "once upon a time"}),
        ("embeddings", {"model": "m", "input": ["a", "b c"]}),
    ],
)
async def test_complete_answers_of_the_mock_are_stored_with_their_usage(
    kind: CacheKind, body: dict[str, Any]
) -> None:
    status, raw = await capture_mock(kind, body)
    answer = storable_answer(kind, status, raw)
    assert answer is not None
    assert answer.document == raw  # the upstream's own bytes
    usage = orjson.loads(raw)["usage"]
    assert (answer.prompt_tokens, answer.completion_tokens) == (
        usage["prompt_tokens"],
        usage.get("completion_tokens", 0),
    )


def chat_document(finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def test_a_plain_chat_document_with_annotations_and_refusal_is_stored() -> None:
    raw = orjson.dumps(chat_document(refusal=None, annotations=[]))
    assert storable_answer("chat", 200, raw) is not None


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, chat_document()),
        (429, chat_document()),
        (201, chat_document()),
        (200, chat_document("tool_calls")),
        (200, chat_document("content_filter")),
        (200, chat_document(None)),  # type: ignore[arg-type]
        (
            200,
            chat_document(
                content=None,
                tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            ),
        ),
        (200, {"error": {"message": "no", "type": "server_error", "param": None, "code": None}}),
        (200, {**chat_document(), "choices": []}),
        (200, {**chat_document(), "object": "text_completion"}),
        (
            200,
            {**chat_document(), "choices": [{**chat_document()["choices"][0], "logprobs": {"content": []}}]},
        ),
    ],
)
def test_incomplete_or_unsuccessful_answers_are_not_stored(status: int, document: dict[str, Any]) -> None:
    assert storable_answer("chat", status, orjson.dumps(document)) is None


def test_not_json_and_empty_embeddings_are_not_stored() -> None:
    assert storable_answer("chat", 200, b"<html>") is None
    assert storable_answer("embeddings", 200, b'{"object":"list","data":[],"model":"m"}') is None


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("step", [None, 1, 7])
async def test_a_mock_chat_stream_assembles_into_the_non_streamed_answer(
    include_usage: bool, step: int | None
) -> None:
    body = chat_body("the quick brown fox", n=2, max_tokens=5)
    _, document = await capture_mock("chat", body)
    streamed = {**body, "stream": True, "stream_options": {"include_usage": include_usage}}
    status, stream = await capture_mock("chat", streamed)
    assert status == 200 and stream.endswith(b"data: [DONE]\n\n")
    answer = assemble("chat", stream, step)
    assert answer is not None
    expected = orjson.loads(document)
    got = orjson.loads(answer.document)
    assert got["object"] == "chat.completion"
    assert [c["message"]["content"] for c in got["choices"]] == [
        c["message"]["content"] for c in expected["choices"]
    ]
    assert [c["finish_reason"] for c in got["choices"]] == ["length", "length"]
    assert [c["index"] for c in got["choices"]] == [0, 1]
    assert got["choices"][0]["message"]["role"] == "assistant"
    assert got["usage"] == (expected["usage"] if include_usage else None)
    assert got["id"].startswith("chatcmpl-") and got["system_fingerprint"] == expected["system_fingerprint"]
    assert storable_answer("chat", 200, answer.document) is not None  # replayable either way


async def test_a_mock_completions_stream_assembles_into_the_non_streamed_answer() -> None:
    body = {"model": "m", "prompt": "a b c", "max_tokens": 4}
    _, document = await capture_mock("completions", body)
    _, stream = await capture_mock(
        "completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    answer = assemble("completions", stream, 5)
    assert answer is not None
    got, expected = orjson.loads(answer.document), orjson.loads(document)
    assert got["object"] == "text_completion"
    assert got["choices"][0]["text"] == expected["choices"][0]["text"]
    assert got["usage"] == expected["usage"]
    assert (answer.prompt_tokens, answer.completion_tokens) == (3, 4)


OPENAI_STREAM = (
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"q1"}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":"Hello"},'
    b'"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Zx"}\r\n\r\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":" there!"},'
    b'"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"p"}\r\n\r\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{},"logprobs":null,'
    b'"finish_reason":"stop"}],"usage":null,"obfuscation":"rr"}\r\n\r\n'
    b'data: {"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0}},"obfuscation":"x"}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 13])
def test_an_openai_shaped_stream_assembles(step: int | None) -> None:
    answer = assemble("chat", OPENAI_STREAM, step)
    assert answer is not None
    got = orjson.loads(answer.document)
    assert got["id"] == "chatcmpl-B9" and got["created"] == 1741000000
    assert got["service_tier"] == "default" and got["system_fingerprint"] == "fp_06737a9306"
    assert "obfuscation" not in got
    assert got["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert got["usage"]["total_tokens"] == 12
    assert (answer.prompt_tokens, answer.completion_tokens) == (9, 3)


def test_reasoning_and_refusal_deltas_are_concatenated() -> None:
    stream = b"".join(
        b"data: " + orjson.dumps(chunk) + b"\n\n"
        for chunk in (
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant"}}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"reasoning_content": "th"}}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"reasoning_content": "ink"}}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"refusal": "no"}}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
        )
    )
    answer = assemble("chat", stream + b"data: [DONE]\n\n")
    assert answer is not None
    message = orjson.loads(answer.document)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "reasoning_content": "think", "refusal": "no"}


def _replace(stream: bytes, old: bytes, new: bytes) -> bytes:
    assert old in stream
    return stream.replace(old, new)


TOOL_DELTA = b'"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}'


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda s: s[: s.index(b"data: [DONE]")], id="cut-before-done"),
        pytest.param(lambda s: s[: len(s) // 2], id="cut-mid-way"),
        pytest.param(
            lambda s: _replace(s, b'"finish_reason":"stop"', b'"finish_reason":"content_filter"'),
            id="content-filter",
        ),
        pytest.param(
            lambda s: _replace(s, b'"finish_reason":"stop"', b'"finish_reason":"tool_calls"'),
            id="tool-calls-finish",
        ),
        pytest.param(lambda s: _replace(s, b'"delta":{"content":"Hello"}', TOOL_DELTA), id="tool-call-delta"),
        pytest.param(
            lambda s: _replace(
                s,
                b"data: [DONE]",
                b'data: {"error":{"message":"boom","type":"server_error"}}\r\n\r\ndata: [DONE]',
            ),
            id="error-event",
        ),
        pytest.param(lambda s: s + OPENAI_STREAM[:200], id="data-after-done"),
        pytest.param(
            lambda s: _replace(
                s,
                b'"logprobs":null,"finish_reason":"stop"',
                b'"logprobs":{"content":[]},"finish_reason":"stop"',
            ),
            id="logprobs",
        ),
    ],
)
def test_streams_that_are_not_stored(spoil: Any) -> None:
    assert assemble("chat", spoil(OPENAI_STREAM)) is None
    assert assemble("chat", spoil(OPENAI_STREAM), 9) is None


def test_a_stream_beyond_max_bytes_is_not_stored() -> None:
    assert assemble("chat", OPENAI_STREAM, 100, max_bytes=len(OPENAI_STREAM)) is not None
    assert assemble("chat", OPENAI_STREAM, 100, max_bytes=len(OPENAI_STREAM) - 1) is None


async def test_a_chat_stream_is_not_assembled_as_completions() -> None:
    _, stream = await capture_mock("chat", chat_body(stream=True))
    assert assemble("completions", stream) is None
    assert assemble("embeddings", stream) is None


def test_the_shared_encoding_round_trips() -> None:
    answer = StoredAnswer("chat", b'{"a":\n1}', 5, 7)  # a document may hold newlines
    assert StoredAnswer.decode(answer.encode(123.5)) == (answer, 123.5)
    for foreign in (b"", b"plain", b"[1,2]\n{}", b'["images",1,1,1]\n{}', b'["chat","1",1,1]\n{}'):
        assert StoredAnswer.decode(foreign) is None
