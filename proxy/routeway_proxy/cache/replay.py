"""A stored answer replayed to a request that hit (pure, no I/O).

Non-streamed request: the stored document, byte for byte — the same `id` and `created` as
the answer the upstream gave the first time. Why keep them: a hit *is* that answer (as an
HTTP cache replays the same representation and says how old it is with `Age`, which
`control.cache_headers` adds); the id then ties every repetition to the one upstream call
that was paid for, which is what an operator reconciling bills or logs looks for; and the
hit path does no parse or serialisation at all.

Streamed request: a well-formed SSE stream of the same answer, shaped as OpenAI streams:
a role chunk (`delta: {role, content: ""}`), one content chunk per choice with its whole
text (the answer exists already; splitting it would only cost bytes and events), a finish
chunk, a usage-only chunk (`choices: []`) only when the request asked
`stream_options.include_usage` — and then, as OpenAI does, `"usage": null` on every other
chunk — and `data: [DONE]`. Completions stream `text_completion` chunks the same way.
Embeddings never stream: their document is the answer either way.
"""

from __future__ import annotations

from typing import Any

import orjson

from routeway_proxy.cache.answers import CHUNK_OBJECTS, StoredAnswer

JSON_CONTENT_TYPE = "application/json"
SSE_CONTENT_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
_CHUNK_TOP_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asked for the usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def replay(answer: StoredAnswer, stream: bool, include_usage: bool) -> tuple[bytes, str]:
    """The body and content type that answer a hit."""
    if stream and answer.kind in CHUNK_OBJECTS:
        return replay_stream(answer, include_usage), SSE_CONTENT_TYPE
    return answer.document, JSON_CONTENT_TYPE


def replay_stream(answer: StoredAnswer, include_usage: bool) -> bytes:
    """The SSE body of a stored (chat) completion, ending with `data: [DONE]`."""
    document = orjson.loads(answer.document)
    chat = answer.kind == "chat"
    base: dict[str, Any] = {"id": document.get("id"), "object": CHUNK_OBJECTS[answer.kind]}
    base.update((k, document[k]) for k in _CHUNK_TOP_FIELDS[1:] if k in document)
    choices: list[dict[str, Any]] = document["choices"]
    events: list[bytes] = []

    def emit(parts: list[dict[str, Any]], usage: Any = None) -> None:
        chunk = dict(base)
        chunk["choices"] = parts
        if include_usage:
            chunk["usage"] = usage
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")

    if chat:
        emit([_chat_part(c["index"], {"role": _role(c), "content": ""}, None) for c in choices])
        for choice in choices:
            delta = _text_delta(choice.get("message") or {})
            if delta:
                emit([_chat_part(choice["index"], delta, None)])
        emit([_chat_part(c["index"], {}, c["finish_reason"]) for c in choices])
    else:
        for choice in choices:
            if choice.get("text"):
                emit([_text_part(choice["index"], choice["text"], None)])
        emit([_text_part(c["index"], "", c["finish_reason"]) for c in choices])
    usage = document.get("usage")
    if include_usage and usage is not None:
        emit([], usage)
    events.append(DONE)
    return b"".join(events)


def _role(choice: dict[str, Any]) -> str:
    role = (choice.get("message") or {}).get("role")
    return role if isinstance(role, str) else "assistant"


def _text_delta(message: dict[str, Any]) -> dict[str, str]:
    """Every non-empty string of the message but its role: content, refusal, reasoning."""
    return {k: v for k, v in message.items() if k != "role" and isinstance(v, str) and v}


def _chat_part(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_part(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
