"""Which upstream answers may be stored, and the one form they are stored in (pure, no I/O).

Only complete, successful answers are stored: status 200, a JSON document of the endpoint's
shape, and for (chat) completions every choice ended with `finish_reason` `stop` or
`length` — a tool call, a content filter stop or a cut stream is never repeated to another
request. Embeddings: status 200 with a non-empty `data` list.

One entry serves streamed and non-streamed requests alike, so an answer is always stored as
the non-streamed document (`chat.completion` / `text_completion` / the embeddings `list`);
`replay.py` turns it back into an SSE stream. A streamed miss is assembled from its events
(`StreamAssembler`): role, content deltas, finish reason and usage. What cannot be assembled
without loss — a delta carrying something other than text (`tool_calls`, `audio`,
`function_call`), per-token `logprobs`, an error event, a stream without `[DONE]` — makes
the answer unstorable rather than stored wrong. String delta fields other than `content`
(`refusal`, `reasoning_content` of vLLM/DeepSeek) are concatenated like content.

Why the stored bytes of a non-streamed answer are the upstream's own bytes: a hit then
returns exactly what the first client got, with no serialisation on the hot path.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from routeway_proxy.cache.key import CacheKind

STORABLE_FINISH = frozenset({"stop", "length"})
COMPLETION_OBJECTS = {"chat": "chat.completion", "completions": "text_completion"}
CHUNK_OBJECTS = {"chat": "chat.completion.chunk", "completions": "text_completion"}
KEPT_TOP_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
"""Top-level fields of a stream's chunks carried into the assembled document (others, like
OpenAI's per-chunk `obfuscation` padding, describe one chunk, not the answer)."""

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class StoredAnswer(NamedTuple):
    """An answer in the cache: the endpoint, the non-streamed JSON document, its usage.
    Immutable (shared by every hit); a NamedTuple because one is made per stored miss, and a
    frozen dataclass's construction costs several times a tuple's."""

    kind: CacheKind
    document: bytes
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def size(self) -> int:
        """Bytes this entry holds (what `maxBytes` counts, with the key)."""
        return len(self.document)

    def encode(self, stored_at: float) -> bytes:
        """One bytes value for a shared store: a JSON header line (kind, usage, when it was
        stored, for `Age`), then the document."""
        header = orjson.dumps([self.kind, self.prompt_tokens, self.completion_tokens, stored_at])
        return header + b"\n" + self.document

    @staticmethod
    def decode(value: bytes) -> tuple[StoredAnswer, float] | None:
        """The answer and its time of storing as `encode` wrote them; None for anything else
        (a foreign or older value under the same key is a miss, never an error)."""
        head, sep, document = value.partition(b"\n")
        if not sep:
            return None
        try:
            kind, prompt, completion, stored_at = orjson.loads(head)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
        if kind not in COMPLETION_OBJECTS and kind != "embeddings":
            return None
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        if not isinstance(stored_at, (int, float)):
            return None
        return StoredAnswer(kind, document, prompt, completion), float(stored_at)


def storable_answer(kind: CacheKind, status: int, body: bytes) -> StoredAnswer | None:
    """The entry for a non-streamed upstream answer, or None when it must not be stored."""
    if status != 200:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not storable_document(kind, document):
        return None
    prompt, completion = _usage_counts(document.get("usage"))
    return StoredAnswer(kind, body, prompt, completion)


def storable_document(kind: CacheKind, document: Any) -> bool:
    """Whether a parsed answer is complete and successful and can be replayed either way."""
    if not isinstance(document, dict) or "error" in document:
        return False
    if kind == "embeddings":
        data = document.get("data")
        return isinstance(data, list) and bool(data)
    if document.get("object") != COMPLETION_OBJECTS[kind]:
        return False
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") not in STORABLE_FINISH:
            return False
        if choice.get("logprobs") is not None:
            return False
        if kind == "chat":
            message = choice.get("message")
            if not isinstance(message, dict) or not _text_only(message):
                return False
        elif not isinstance(choice.get("text"), str):
            return False
    return True


def _text_only(message: dict[str, Any]) -> bool:
    """A message made only of strings (role, content, refusal, reasoning) — what a stream of
    text deltas can reproduce. Empty lists (`annotations: []`) carry nothing and pass."""
    return all(value is None or isinstance(value, str) or value == [] for value in message.values())


def _usage_counts(usage: Any) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and prompt > 0 else 0,
        completion if isinstance(completion, int) and completion > 0 else 0,
    )


class _Choice:
    __slots__ = ("finish_reason", "parts", "role")

    def __init__(self) -> None:
        self.role: str | None = None
        self.parts: dict[str, list[str]] = {}  # delta field ("content", "refusal", ...) -> pieces
        self.finish_reason: str | None = None


class StreamAssembler:
    """Feed it the upstream's SSE bytes as they arrive; `result()` after the stream ended
    cleanly gives the entry, or None when the answer must not be stored.

    Fed the upstream's bytes (before the relay drops a usage-only event the client did not
    ask for), so the entry keeps the usage. While the stream runs it only cuts events and
    keeps their data (a slice per event); everything else happens in `result()`, after the
    client has its last byte: all events are parsed by one `orjson.loads` of a JSON array
    (a Python call per event is what costs here, not the parsing) and then merged. Beyond
    `max_bytes` of stream it gives up (`spoiled`), so a huge answer is never buffered twice.
    """

    __slots__ = ("_buffer", "_datas", "_seen", "kind", "max_bytes", "spoiled")

    def __init__(self, kind: CacheKind, max_bytes: int) -> None:
        self.kind = kind
        self.max_bytes = max_bytes
        self.spoiled = kind not in CHUNK_OBJECTS  # embeddings never stream
        self._buffer = b""
        self._seen = 0
        self._datas: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self.spoiled:
            return
        self._seen += len(chunk)
        if self._seen > self.max_bytes:
            self.spoiled = True
            self._datas = []
            return
        data = self._buffer + chunk if self._buffer else chunk
        events = _EVENT_END.split(data) if b"\r" in data else data.split(b"\n\n")
        self._buffer = events.pop()  # after the last boundary: an event still arriving
        datas = self._datas
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:
                datas.append(event[6:])  # one data line: the usual event
            else:
                value = _event_data(event)
                if value is not None:  # comments and data-less events carry nothing
                    datas.append(value)

    def result(self) -> StoredAnswer | None:
        """The assembled entry; None unless `[DONE]` ended the stream, every event was a
        chunk of this endpoint and every choice finished well."""
        if self._buffer.strip():
            value = _event_data(self._buffer)  # a last event without its blank line
            if value is not None:
                self._datas.append(value)
            self._buffer = b""
        datas = self._datas
        if self.spoiled or len(datas) < 2 or datas[-1] != b"[DONE]":
            return None
        try:
            chunks = orjson.loads(b"[" + b",".join(datas[:-1]) + b"]")
        except orjson.JSONDecodeError:
            return None  # a second [DONE], a broken event: not a clean stream
        return self._merge(chunks)

    def _merge(self, chunks: list[Any]) -> StoredAnswer | None:
        kind = self.kind
        chunk_object = CHUNK_OBJECTS[kind]
        choices: dict[int, _Choice] = {}
        usage: Any = None
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("object") != chunk_object:
                return None  # error events too
            parts = chunk.get("choices")
            if not isinstance(parts, list):
                return None
            for part in parts:
                if not _merge_choice(kind, choices, part):
                    return None
            if chunk.get("usage") is not None:
                usage = chunk["usage"]
        if not choices:
            return None
        document: dict[str, Any] = {"object": COMPLETION_OBJECTS[kind]}
        for field in KEPT_TOP_FIELDS:
            value = next((c[field] for c in chunks if c.get(field) is not None), None)
            if value is not None:
                document[field] = value
        if "id" not in document:
            return None
        rendered = []
        for index in sorted(choices):
            choice = choices[index]
            if choice.finish_reason not in STORABLE_FINISH:
                return None
            texts = {field: "".join(pieces) for field, pieces in choice.parts.items()}
            if kind == "chat":
                message: dict[str, Any] = {"role": choice.role or "assistant", "content": None}
                message.update(texts)
                entry: dict[str, Any] = {"index": index, "message": message}
            else:
                entry = {"index": index, "text": texts.get("text", "")}
            entry["logprobs"] = None
            entry["finish_reason"] = choice.finish_reason
            rendered.append(entry)
        document = {"id": document.pop("id"), **document, "choices": rendered, "usage": usage}
        prompt, completion = _usage_counts(usage)
        return StoredAnswer(kind, orjson.dumps(document), prompt, completion)


def _merge_choice(kind: CacheKind, choices: dict[int, _Choice], part: Any) -> bool:
    """Add one choice's piece of one chunk; False when it cannot be reproduced as text."""
    if not isinstance(part, dict):
        return False
    index = part.get("index", 0)
    if not isinstance(index, int) or part.get("logprobs") is not None:
        return False
    choice = choices.get(index)
    if choice is None:
        choice = choices[index] = _Choice()
    finish = part.get("finish_reason")
    if finish is not None:
        choice.finish_reason = finish
    if kind == "completions":
        text = part.get("text")
        if text is None:
            return True
        if not isinstance(text, str):
            return False
        choice.parts.setdefault("text", []).append(text)
        return True
    delta = part.get("delta")
    if delta is None:
        return True
    if not isinstance(delta, dict):
        return False
    for field, value in delta.items():
        if value is None or value == []:
            continue
        if not isinstance(value, str):
            return False  # tool_calls, audio, function_call: not reproducible as text
        if field == "role":
            choice.role = value
        else:
            choice.parts.setdefault(field, []).append(value)
    return True


def _event_data(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined by newlines), None without any."""
    parts = []
    for line in event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
