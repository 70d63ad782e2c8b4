"""Reading token usage out of upstream answers without re-serialising them.

Why this shape: the gateway relays upstream bytes unchanged, so it must find `usage` without
parsing every document or event. A JSON answer is searched from its end for the `"usage"`
key and only that object is parsed; a server-sent-event stream is cut into events as it
arrives and only an event that carries a usage object (`"usage": {`, not `null`) is parsed.

Stripping: when the client did not ask for `stream_options.include_usage`, the gateway asks
the upstream for it anyway (to count tokens) and drops the usage-only final event (the one
with `"choices": []`) so the client sees exactly the stream it asked for.

Events are forwarded whole: an event split across upstream chunks is held until its end
arrives (bytes unchanged), so a stream cut mid-way can be ended with a clean error event.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')
_USAGE_OPEN = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# top-level keys of the usage object: a nested `prompt_tokens_details` never matches `"prompt_tokens"`,
# and nested objects of usage only hold *_tokens keys of their own (cached_tokens, ...)
# Counts are at most 15 digits: a longer number (only a broken or hostile upstream sends one)
# is not read, rather than making int() raise on thousands of digits.
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d{1,15})(?!\d)')
# The layout every OpenAI-compatible server writes (prompt, then completion tokens, as the first
# members): one match instead of the general scan. The first member after `{` and the one after
# it are top-level members of usage, so this never reads a nested object's counts.
_USUAL_USAGE = re.compile(
    rb'"usage"\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d{1,15})\s*'
    rb'(?:,\s*"completion_tokens"\s*:\s*(\d{1,15})\s*[,}]|\})'
)
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d{1,15})(?!\d)')


Usage = tuple[int, int]
"""Token usage of one answer: (prompt tokens, completion tokens) — the one form the request
path, the ledger and the metrics share (a plain tuple: building it costs nothing next to
finding it)."""


def read_usage(value: Any) -> Usage | None:
    """A `Usage` from an OpenAI usage object (completion tokens absent for embeddings)."""
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens")
    completion = value.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return max(prompt, 0), max(completion or 0, 0)


def find_document_usage(body: bytes) -> Usage | None:
    """Usage of a JSON answer: the last `"usage": {...}` object in the document.

    A `"usage"` inside a string value would be escaped (`\\"usage\\"`), so the bare key can
    only be a real key.
    """
    position = body.rfind(b'"usage"')
    if position < 0:
        return None
    usual = _USUAL_USAGE.match(body, position)
    if usual is not None:
        prompt_digits, completion_digits = usual.groups()
        return int(prompt_digits), int(completion_digits) if completion_digits is not None else 0
    return scan_document_usage(body, position)


def scan_document_usage(body: bytes, position: int) -> Usage | None:
    """The general search behind `find_document_usage`, from the `"usage"` key at `position`
    backwards: any member order, nested details. Where both apply they agree (tested): on
    well-formed documents whose usage object nests at most one level and has no brace inside
    a string. Beyond that (deeper nesting, braces in strings, a nested `"usage"` object before
    the top-level one, a usage object cut off after its counts) this scan gives up or reads
    the nested object, and the usual-layout match still reads the top-level counts."""
    while position >= 0:
        span = match_usage_object(body, position)
        if span is not None:
            start, end = span
            prompt = _PROMPT_TOKENS.search(body, start, end)
            if prompt is None:
                return None
            completion = _COMPLETION_TOKENS.search(body, start, end)
            return int(prompt.group(1)), int(completion.group(1)) if completion else 0
        position = body.rfind(b'"usage"', 0, position)
    return None


def match_usage_object(body: bytes, position: int) -> tuple[int, int] | None:
    """The span of group 1 of `_USAGE_OBJECT.match(body, position)`, found with `bytes.find`.

    Why not the regex: its nested alternation steps (and keeps backtracking state) byte by
    byte, ~3 us for a usage object, on every JSON answer. The pattern matches an object whose
    members nest at most one level, ending at the first `}` outside the nested ones; a `{`
    inside a nested object makes it fail, as does a missing `}`.
    """
    opened = _USAGE_OPEN.match(body, position)
    if opened is None:
        return None
    start = opened.end() - 1  # the object's "{"
    cursor = start + 1
    while True:
        close = body.find(b"}", cursor)
        if close < 0:
            return None
        nested = body.find(b"{", cursor, close)
        if nested < 0:
            return start, close + 1
        if body.find(b"{", nested + 1, close) >= 0:
            return None  # nested two levels deep: the pattern cannot match
        cursor = close + 1  # `close` ended the nested object


def _split_events(block: bytes) -> list[bytes]:
    """Complete events of `block` (which ends on an event boundary), each with its terminator."""
    events: list[bytes] = []
    start = 0
    for match in _EVENT_END.finditer(block):
        events.append(block[start : match.end()])
        start = match.end()
    return events


def _read_event_data(event: bytes) -> bytes:
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    parts = []
    for line in lines:
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts)


def _find_boundary(data: bytes) -> int:
    """End offset of the last complete event in `data`, or -1."""
    if b"\r" not in data:
        index = data.rfind(b"\n\n")
        return index + 2 if index >= 0 else -1
    end = -1
    for match in _EVENT_END.finditer(data):
        end = match.end()
    return end


def _find_usage_open(data: bytes, start: int) -> re.Match[bytes] | None:
    """`_USAGE_OPEN.search(data, start)`, with `bytes.find` doing the scanning: every match
    begins with the `"usage"` literal, so the first position where the pattern matches is the
    leftmost match."""
    position = data.find(b'"usage"', start)
    while position >= 0:
        match = _USAGE_OPEN.match(data, position)
        if match is not None:
            return match
        position = data.find(b'"usage"', position + 1)
    return None


MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Most bytes of one unfinished SSE event the relay holds: an upstream sending bytes that never
end an event is not stalled (idle counts bytes), so without this bound it would grow the buffer
(and copy it once per chunk) until the stream ended."""


class SSEUsageFilter:
    """Feed upstream SSE bytes; get back the bytes to forward now. Records `usage`."""

    __slots__ = ("_pending", "strip_usage_chunk", "usage")

    def __init__(self, strip_usage_chunk: bool) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.usage: Usage | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" not in data:  # _find_boundary's common case, inlined (once per chunk)
            end = data.rfind(b"\n\n")
            if end >= 0:
                end += 2
        else:
            end = _find_boundary(data)
        if end < 0:
            self._pending = data
            return b""
        if end == len(data):
            complete = data
            self._pending = b""
        else:
            complete = data[:end]
            self._pending = data[end:]
        match = _find_usage_open(complete, 0)
        if match is not None:
            return self._take_usage(complete, match)
        return complete

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished event held back."""
        return len(self._pending)

    def flush(self) -> bytes:
        """Bytes of an unterminated last event, at the end of a stream that ended cleanly."""
        rest, self._pending = self._pending, b""
        return rest

    def discard_pending(self) -> None:
        """Forget a partial event (the stream was cut): it must not reach the client."""
        self._pending = b""

    def _take_usage(self, complete: bytes, first: re.Match[bytes] | None = None) -> bytes:
        """Parse (and maybe drop) only the events that carry a usage object.

        Events end at `\n\n` here (no `\r` in the block; no run of three newlines before a
        usage event or at the block's end, where `_EVENT_END`'s left-to-right pairing could
        differ), so an event's bounds are the boundaries around its `"usage"` key and the
        other events of the block are never split; anything else takes `_take_usage_split`,
        which cuts the whole block into events the way `_EVENT_END` does. `first` is the
        block's first `_USAGE_OPEN` match when the caller already found it.
        """
        if b"\r" in complete or complete.endswith(b"\n\n\n"):
            return self._take_usage_split(complete)
        pieces: list[bytes] = []
        cursor = 0
        search_at = 0
        match = first if first is not None else _find_usage_open(complete, 0)
        while match is not None:
            at = match.start()
            boundary = complete.rfind(b"\n\n", 0, at)
            if boundary > 0 and complete[boundary - 1] == 10:  # 3+ newlines: split decides
                return self._take_usage_split(complete)
            start = boundary + 2 if boundary >= 0 else 0
            end = complete.find(b"\n\n", at) + 2  # the block ends on a boundary: found
            search_at = end
            event = complete[start:end]
            if match.end() > end and _USAGE_OPEN.search(event) is None:
                match = _find_usage_open(complete, search_at)
                continue  # the match ran across the event's end: not a usage object
            match = _find_usage_open(complete, search_at)
            if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
                data = event[6:-2]  # one data line: what _read_event_data gives
            else:
                data = _read_event_data(event)
            if self._note_usage(data):
                pieces.append(complete[cursor:start])
                cursor = end
        if not pieces:
            return complete
        pieces.append(complete[cursor:])
        return b"".join(pieces)

    def _take_usage_split(self, complete: bytes) -> bytes:
        kept: list[bytes] = []
        dropped = False
        for event in _split_events(complete):
            usage_event = b'"usage"' in event and _USAGE_OPEN.search(event) is not None
            if usage_event and self._note_usage(_read_event_data(event)):
                dropped = True
                continue
            kept.append(event)
        return b"".join(kept) if dropped else complete

    def _note_usage(self, data: bytes) -> bool:
        """Keep the usage an event's data carries; True when the event is to be dropped (the
        usage-only final chunk the client did not ask for)."""
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(document, dict):
            return False
        usage = read_usage(document.get("usage"))
        if usage is None:
            return False
        self.usage = usage
        return self.strip_usage_chunk and document.get("choices") == []
