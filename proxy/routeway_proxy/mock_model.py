"""The simulated model behind provider `mock` and `routeway mock-backend`.

Why it exists: the quick start, the demos and the tests need an upstream that answers like an
OpenAI-compatible server (exact response shapes, SSE streaming, usage) and that can be made
slow or flaky on purpose (`MockBehaviour`), without any model or network.

Why it looks like this:
- `mock_reply` decides status and headers at once and does every wait inside the body
  iterator, so the caller can relay the bytes as they come and cancelling the consumer
  cancels the sleeps too.
- The generated text is a pure function of the prompt (`generate_tokens`), so tests anywhere
  in the project can assert exact content; embeddings are a pure function of the input text.
- It is on the benchmark path: bodies are built with orjson, one dict per chunk, no pydantic.
- What it generates is bounded (the limits below), because any key holder can reach it: a
  small request must not buy a huge answer or stall the worker. A request over a bound is a
  400 naming the parameter, as OpenAI answers a `max_tokens` or `dimensions` beyond a model's
  limit; the backend's own defaults (`maxTokens`, `embeddingDimensions`) are clamped to the
  same bounds. With them, no answer exceeds `MAX_ANSWER_BYTES` (tests/mock prove it with the
  worst case of each endpoint).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import operator
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal

import orjson

from routeway.proxyconfig import MockBehaviour

MockKind = Literal["chat", "completions", "embeddings"]

error_random = random.Random()
"""Draws the `error_rate` failures; reseed it (`error_random.seed(n)`) for repeatable tests."""

SYSTEM_FINGERPRINT = "fp_routeway_mock"
MAX_CHOICES = 16
"""Most choices (`n`) per completion."""
MAX_GENERATED_TOKENS = 4096
"""Most tokens per choice (`max_tokens`/`max_completion_tokens`; the ModelBackend's `maxTokens` bound)."""
MAX_TOTAL_TOKENS = 8192
"""Most tokens per answer, all choices together (`max_tokens` x `n`)."""
MAX_TOKEN_CHARS = 16
"""Longest generated token: the prompt's words are cut to this, as no real tokenizer makes
a token of a 100 KB word."""
MAX_EMBEDDING_DIMENSIONS = 3072
"""Most `dimensions` per vector (text-embedding-3-large's)."""
MAX_EMBEDDING_INPUTS = 2048
"""Most inputs per embeddings request (OpenAI's limit)."""
MAX_EMBEDDING_VALUES = 65_536
"""Most numbers per embeddings answer, inputs x dimensions (e.g. 42 inputs of 1,536)."""
MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""What the bounds above keep every answer under, streamed or not (not enforced: implied)."""

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class MockReply:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    """SSE event bytes when the request streams, else one JSON document (single item)."""


class InvalidMockRequest(ValueError):
    """The request body is not a valid OpenAI request; answered with a 400."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


async def mock_reply(kind: MockKind, body: dict[str, Any], model: str, behaviour: MockBehaviour) -> MockReply:
    """Answer one OpenAI request as the simulated model would.

    Validation errors are 400s in the OpenAI error shape; `behaviour.error_rate` turns that
    fraction of valid requests into 500s. Nothing here raises for bad input.
    """
    streaming = kind != "embeddings" and body.get("stream") is True
    try:
        build = _BUILDERS[kind]
        plan = build(body, model, behaviour)
    except InvalidMockRequest as exc:
        return _error_reply(400, str(exc), "invalid_request_error", exc.code, exc.param, 0.0)
    if behaviour.error_rate > 0 and error_random.random() < behaviour.error_rate:
        wait = behaviour.time_to_first_token if streaming else behaviour.latency
        return _error_reply(
            500, "The mock model failed on purpose (errorRate).", "server_error", "mock_error", None, wait
        )
    if isinstance(plan, _Completion) and streaming:
        return MockReply(200, dict(SSE_HEADERS), _stream(plan, behaviour))
    return MockReply(200, dict(JSON_HEADERS), _one_document(plan.render(), behaviour.latency))


def generate_tokens(prompt: str, count: int) -> list[str]:
    """The mock model's output: the prompt's words cycled, `count` tokens, deterministic.

    Each token after the first carries its leading space, so `"".join(tokens)` is the text.
    An empty prompt yields the word "mock" repeated; a word longer than `MAX_TOKEN_CHARS` is cut.
    """
    words = [word[:MAX_TOKEN_CHARS] for word in prompt.split()] or ["mock"]
    n = len(words)
    return [words[i % n] if i == 0 else " " + words[i % n] for i in range(count)]


def embed_text(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from the text only: equal texts embed equally, others differ.
    (SHAKE-256 gives all the bytes in one call: the vector costs a few C calls and one pass.)"""
    raw = hashlib.shake_256(text.encode()).digest(dimensions * 4)
    ints = struct.unpack(f"<{dimensions}i", raw)
    scale = 1.0 / (math.hypot(*ints) or 1.0)
    return list(map(operator.mul, ints, repeat(scale, dimensions)))


def count_tokens(text: str) -> int:
    """Whitespace words, at least one: a cheap stand-in for a tokenizer."""
    return max(1, len(text.split()))


def render_error(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    """The OpenAI error document."""
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


# --- request interpretation -------------------------------------------------------------


@dataclass(frozen=True)
class _Completion:
    """A chat or text completion to produce, everything decided before any byte is sent."""

    chat: bool
    id: str
    created: int
    model: str
    prompt_tokens: int
    tokens: list[str]
    choices: int
    finish_reason: str
    include_usage: bool

    def usage(self) -> dict[str, int]:
        completion = len(self.tokens) * self.choices
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def render(self) -> bytes:
        text = "".join(self.tokens)
        if self.chat:
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
                for i in range(self.choices)
            ]
        else:
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": self.finish_reason}
                for i in range(self.choices)
            ]
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
                "usage": self.usage(),
            }
        )

    def render_chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


@dataclass(frozen=True)
class _Embeddings:
    model: str
    texts: list[str]
    dimensions: int
    base64: bool

    def render(self) -> bytes:
        data = []
        for index, text in enumerate(self.texts):
            vector = embed_text(text, self.dimensions)
            embedding: list[float] | str
            if self.base64:
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(count_tokens(t) for t in self.texts)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": self.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _plan_chat(body: dict[str, Any], model: str, behaviour: MockBehaviour) -> _Completion:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidMockRequest(
            "'messages' must be a non-empty array of messages.", "messages", "missing_required_parameter"
        )
    parts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidMockRequest(f"'messages[{index}]' must be an object with a 'role'.", "messages")
        parts.append(_message_text(message.get("content")))
    prompt = " ".join(p for p in parts if p)
    return _plan_completion(True, "chatcmpl-", prompt, body, model, behaviour)


def _plan_text(body: dict[str, Any], model: str, behaviour: MockBehaviour) -> _Completion:
    prompt = body.get("prompt")
    texts = _input_texts(prompt, "prompt")
    return _plan_completion(False, "cmpl-", " ".join(texts), body, model, behaviour)


def _plan_completion(
    chat: bool, prefix: str, prompt: str, body: dict[str, Any], model: str, behaviour: MockBehaviour
) -> _Completion:
    param = (
        "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    )
    requested = _bounded_int(body.get(param), param, MAX_GENERATED_TOKENS)
    n = _bounded_int(body.get("n"), "n", MAX_CHOICES) or 1
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidMockRequest("'stream_options' must be an object.", "stream_options")
    count = requested if requested is not None else min(behaviour.max_tokens, MAX_GENERATED_TOKENS)
    if count * n > MAX_TOTAL_TOKENS:
        raise InvalidMockRequest(
            f"'{param}' x 'n' is {count * n}; this model generates at most {MAX_TOTAL_TOKENS} tokens "
            "per request.",
            param if requested is not None else "n",
        )
    return _Completion(
        chat=chat,
        id=prefix + uuid.uuid4().hex[:24],
        created=int(time.time()),
        model=model,
        prompt_tokens=count_tokens(prompt),
        tokens=generate_tokens(prompt, count),
        choices=n,
        # A limit the client set was hit ("length"); the model's own limit is a natural stop.
        finish_reason="length" if requested is not None else "stop",
        include_usage=bool(options and options.get("include_usage") is True),
    )


def _plan_embeddings(body: dict[str, Any], model: str, behaviour: MockBehaviour) -> _Embeddings:
    texts = _input_texts(body.get("input"), "input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidMockRequest(
            f"'input' holds {len(texts)} items; at most {MAX_EMBEDDING_INPUTS} per request.", "input"
        )
    dimensions = _bounded_int(body.get("dimensions"), "dimensions", MAX_EMBEDDING_DIMENSIONS) or min(
        behaviour.embedding_dimensions, MAX_EMBEDDING_DIMENSIONS
    )
    if len(texts) * dimensions > MAX_EMBEDDING_VALUES:
        raise InvalidMockRequest(
            f"{len(texts)} inputs of {dimensions} dimensions is {len(texts) * dimensions} numbers; "
            f"this model answers at most {MAX_EMBEDDING_VALUES} per request.",
            "input",
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise InvalidMockRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return _Embeddings(model=model, texts=texts, dimensions=dimensions, base64=encoding == "base64")


_BUILDERS: dict[str, Callable[[dict[str, Any], str, MockBehaviour], _Completion | _Embeddings]] = {
    "chat": _plan_chat,
    "completions": _plan_text,
    "embeddings": _plan_embeddings,
}


def _bounded_int(value: Any, param: str, upper: int) -> int | None:
    """An optional integer field in 1..upper; None when absent or null."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
        raise InvalidMockRequest(f"'{param}' must be an integer between 1 and {upper}.", param)
    return value


def _message_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _input_texts(value: Any, param: str) -> list[str]:
    """`prompt`/`input` as OpenAI accepts it: a string, strings, a token array, token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise InvalidMockRequest(
        f"'{param}' must be a string, an array of strings, or token arrays, and not empty.",
        param,
        "missing_required_parameter" if value is None else "invalid_value",
    )


# --- bodies -----------------------------------------------------------------------------


def _error_reply(
    status: int, message: str, error_type: str, code: str, param: str | None, wait: float
) -> MockReply:
    return MockReply(
        status, dict(JSON_HEADERS), _one_document(render_error(message, error_type, code, param), wait)
    )


async def _one_document(document: bytes, wait: float) -> AsyncIterator[bytes]:
    if wait > 0:
        await asyncio.sleep(wait)
    yield document


async def _stream(plan: _Completion, behaviour: MockBehaviour) -> AsyncIterator[bytes]:
    """Role chunk, one chunk per token (per choice), the finish chunk, usage, [DONE]."""
    if behaviour.time_to_first_token > 0:
        await asyncio.sleep(behaviour.time_to_first_token)
    choices = range(plan.choices)
    if plan.chat:
        yield plan.render_chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for i in choices
            ]
        )
    gap = 1.0 / behaviour.tokens_per_second if behaviour.tokens_per_second > 0 else 0.0
    for position, token in enumerate(plan.tokens):
        if gap and position:
            await asyncio.sleep(gap)
        parts: list[dict[str, Any]]
        if plan.chat:
            parts = [
                {"index": i, "delta": {"content": token}, "logprobs": None, "finish_reason": None}
                for i in choices
            ]
        else:
            parts = [{"index": i, "text": token, "logprobs": None, "finish_reason": None} for i in choices]
        yield plan.render_chunk(parts)
    final: list[dict[str, Any]]
    if plan.chat:
        final = [
            {"index": i, "delta": {}, "logprobs": None, "finish_reason": plan.finish_reason} for i in choices
        ]
    else:
        final = [
            {"index": i, "text": "", "logprobs": None, "finish_reason": plan.finish_reason} for i in choices
        ]
    yield plan.render_chunk(final)
    if plan.include_usage:
        yield plan.render_chunk([], plan.usage())
    yield _DONE
