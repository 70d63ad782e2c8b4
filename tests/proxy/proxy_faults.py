"""Misbehaving upstreams on loopback, and the table of what the gateway makes of each.

Shared by the tests (`test_proxy_upstream_faults.py`: the in-process gateway, one test per
row) and `scripts/upstream-faults` (`routeway serve` as a process, the table in
docs/reliability.md). `FaultServer` is a raw asyncio TCP server, so it can also do what no
HTTP server does on purpose: reset a connection, send bytes that are not HTTP, stop halfway.
The URL path picks the behaviour: a backend's base URL is `http://127.0.0.1:<port>/<behaviour>/v1`.

Every scenario is one route: a `primary` backend that misbehaves and a `fallback` backend
(well-behaved unless the scenario says otherwise), `retries.attempts: 1` and every `retryOn`
value (`connect-failure`, `timeout`, `5xx`, `429`); `firstByte` 1.5 s, `idle` 0.4 s. What is
compared: the client's status, the shape of the body, its Retry-After, which backend answered,
and the failed attempts per backend and reason (`routeway_upstream_errors_total`) — never
the time taken, which the script prints but the tests do not assert.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

FIRST_BYTE = 1.5  # the primary's firstByte bound, seconds
IDLE = 0.4  # the primary's idle bound: a gap between bytes longer than this is a stall
LATE = 0.9  # a first byte later than IDLE, well within FIRST_BYTE
TRICKLE_GAP = 0.05  # gap between the pieces of a trickle: far below IDLE
HUGE = 8 * 1024 * 1024  # bytes of a huge answer
LEAKED = "sk-upstream-key-echoed-in-an-error-page"  # a page that echoes a credential
PROMPT = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Fault:
    name: str
    primary: str  # the primary's behaviour (see `FaultServer`)
    stream: bool = False
    fallback: str = "ok"
    # expected outcome
    status: int = 200
    shape: str = "json"  # json, sse, sse-cut (an error event ends it), error (OpenAI error JSON)
    answered_by: str = "fallback"
    failures: tuple[tuple[str, str, int], ...] = ()  # (backend, reason, count)
    retry_after: str | None = None  # the Retry-After the client sees (None: none expected)
    what: str = ""  # the row's description in the table


def _f(reason: str, count: int = 1, backend: str = "primary") -> tuple[str, str, int]:
    return (backend, reason, count)


FAULTS: tuple[Fault, ...] = (
    Fault("refuse", "refuse", failures=(_f("connect-failure", 2),), what="connection refused"),
    Fault("close before headers", "close", failures=(_f("connect-failure", 2),), what="accepts, closes"),
    Fault("garbage", "garbage", failures=(_f("connect-failure", 2),), what="answers bytes that are not HTTP"),
    Fault("hang before headers", "hang", failures=(_f("timeout", 2),), what="never answers"),
    Fault(
        "stall mid-body",
        "stall-body",
        failures=(_f("idle-timeout", 2),),
        what="half a JSON body, then nothing",
    ),
    Fault("reset mid-body", "reset-body", failures=(_f("disconnect", 2),), what="half a JSON body, then RST"),
    Fault(
        "truncated body",
        "truncate-body",
        failures=(_f("disconnect", 2),),
        what="half its Content-Length, then FIN",
    ),
    Fault(
        "stall mid-stream",
        "stall-stream",
        stream=True,
        shape="sse-cut",
        answered_by="primary",
        failures=(_f("idle-timeout"),),
        what="one event, then nothing",
    ),
    Fault(
        "reset mid-stream",
        "reset-stream",
        stream=True,
        shape="sse-cut",
        answered_by="primary",
        failures=(_f("disconnect"),),
        what="one event, then RST",
    ),
    Fault(
        "stall after stream headers",
        "stall-stream-early",
        stream=True,
        shape="sse",
        failures=(_f("idle-timeout", 2),),
        what="SSE headers and half an event, then nothing",
    ),
    Fault(
        "reset after stream headers",
        "reset-stream-early",
        stream=True,
        shape="sse",
        failures=(_f("disconnect", 2),),
        what="SSE headers, then RST",
    ),
    Fault(
        "reset mid-event",
        "reset-stream-partial",
        stream=True,
        shape="sse",
        failures=(_f("disconnect", 2),),
        what="SSE headers and half an event, then RST",
    ),
    Fault("429", "429", failures=(_f("429", 2),), what="429, no Retry-After"),
    Fault("429 Retry-After seconds", "429-ra-seconds", failures=(_f("429"),), what="429, `Retry-After: 7`"),
    Fault(
        "429 Retry-After date",
        "429-ra-date",
        failures=(_f("429"),),
        what="429, Retry-After as an HTTP-date 7 s ahead",
    ),
    Fault("503", "503", failures=(_f("5xx", 2),), what="503, no Retry-After"),
    Fault("503 Retry-After seconds", "503-ra-seconds", failures=(_f("5xx"),), what="503, `Retry-After: 7`"),
    Fault(
        "503 Retry-After date",
        "503-ra-date",
        failures=(_f("5xx"),),
        what="503, Retry-After as an HTTP-date 7 s ahead",
    ),
    Fault(
        "503 Retry-After everywhere",
        "503-ra-seconds",
        fallback="503-ra-seconds",
        status=503,
        shape="error",
        answered_by="fallback",
        failures=(_f("5xx"), _f("5xx", backend="fallback")),
        retry_after="7",
        what="both backends: 503, `Retry-After: 7`",
    ),
    Fault(
        "absurd Retry-After",
        "429-ra-absurd",
        fallback="429-ra-absurd",
        status=429,
        shape="error",
        failures=(_f("429"), _f("429", backend="fallback")),
        retry_after="3600",
        what="both backends: 429, `Retry-After: 99999999999`",
    ),
    Fault("502 HTML page", "502-html", failures=(_f("5xx", 2),), what="502 with an HTML page"),
    Fault(
        "500 HTML page",
        "500-html",
        status=500,
        shape="error",
        answered_by="primary",
        failures=(_f("upstream-5xx"),),
        what="500 with an HTML page echoing a key (never retried)",
    ),
    Fault(
        "429 text everywhere",
        "429-text",
        fallback="429-text",
        status=429,
        shape="error",
        failures=(_f("429", 2), _f("429", backend="fallback")),
        what="both backends: 429 with a text/plain body",
    ),
    Fault(
        "503 empty everywhere",
        "503-empty",
        fallback="503-empty",
        status=503,
        shape="error",
        failures=(_f("5xx", 2), _f("5xx", backend="fallback")),
        retry_after="1",
        what="both backends: 503 with an empty body",
    ),
    Fault("huge body", "huge-body", answered_by="primary", what="an 8 MiB JSON answer"),
    Fault(
        "huge stream", "huge-stream", stream=True, shape="sse", answered_by="primary", what="an 8 MiB stream"
    ),
    Fault("trickle body", "trickle-body", answered_by="primary", what="a JSON body in pieces 50 ms apart"),
    Fault(
        "trickle stream",
        "trickle-stream",
        stream=True,
        shape="sse",
        answered_by="primary",
        what="events in pieces 50 ms apart, each event slower than `idle`",
    ),
    Fault(
        "late first byte", "late-body", answered_by="primary", what=f"headers, body after {LATE} s (> idle)"
    ),
    Fault(
        "late first event",
        "late-stream",
        stream=True,
        shape="sse",
        answered_by="primary",
        what=f"SSE headers, first event after {LATE} s (> idle)",
    ),
)


# ---------------------------------------------------------------------- the server


def chat_document(model: str, text: str = "hello there") -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-f",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )


def chat_events(model: str, texts: list[str]) -> list[bytes]:
    def chunk(delta: dict[str, str], finish: str | None) -> bytes:
        document = {
            "id": "chatcmpl-f",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(document) + b"\n\n"

    events = [chunk({"content": text}, None) for text in texts] + [chunk({}, "stop")]
    usage = {"prompt_tokens": 5, "completion_tokens": len(texts), "total_tokens": 5 + len(texts)}
    events.append(
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-f",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
        + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _http_date(seconds_ahead: float) -> str:
    from email.utils import formatdate

    return formatdate(time.time() + seconds_ahead, usegmt=True)


ERROR_PAGE = f"<html><body><h1>502 Bad Gateway</h1><p>Authorization: Bearer {LEAKED}</p></body></html>"


@dataclass
class FaultServer:
    """The upstream of every scenario; `seen` counts requests per behaviour."""

    port: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def base(self, behaviour: str) -> str:
        if behaviour == "refuse":
            return f"http://127.0.0.1:{closed_port()}/v1"
        return f"http://127.0.0.1:{self.port}/{behaviour}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every connection (a stalled behaviour returns; handlers are
        never cancelled from outside, which asyncio's stream server would report as an error)."""
        if self._server is not None:
            self._server.close()
        self._stop.set()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = orjson.loads(await reader.readexactly(length)) if length else {}
            behaviour = path.strip("/").split("/")[0]
            self.seen[behaviour] = self.seen.get(behaviour, 0) + 1
            work = asyncio.ensure_future(
                BEHAVIOURS[behaviour](writer, str(body.get("model")), body.get("stream") is True)
            )
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            for part in (work, stop):
                part.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await part
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _forever() -> None:
    await asyncio.Event().wait()


async def _ok(writer: asyncio.StreamWriter, model: str, stream: bool, text: str = "hello there") -> None:
    if not stream:
        document = chat_document(model, text)
        await _send(
            writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(document)))])
        )
        await _send(writer, document)
        return
    await _send(writer, _sse_head())
    for event in chat_events(model, ["hel", "lo"]):
        await _send(writer, _chunked(event))
    await _send(writer, b"0\r\n\r\n")


def _sse_head() -> bytes:
    return _head(200, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")])


def _error(
    status: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Callable[[asyncio.StreamWriter, str, bool], Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
        document = (
            body
            if body is not None
            else orjson.dumps(
                {
                    "error": {
                        "message": f"upstream {status}",
                        "type": "upstream",
                        "param": None,
                        "code": f"u{status}",
                    }
                }
            )
        )
        extra = [(k, _http_date(7) if v == "DATE" else v) for k, v in (headers or [])]
        await _send(
            writer,
            _head(status, [("Content-Type", content_type), ("Content-Length", str(len(document))), *extra]),
        )
        await _send(writer, document)

    return answer


async def _close(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    return None


async def _garbage(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, b"\x16\x03\x01\x00 this is not HTTP at all\r\n\r\n")


async def _hang(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _forever()


async def _half_body(writer: asyncio.StreamWriter, model: str) -> None:
    document = chat_document(model)
    await _send(
        writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(document)))])
    )
    await _send(writer, document[: len(document) // 2])


async def _stall_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _half_body(writer, model)
    await _forever()


async def _reset_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _half_body(writer, model)
    await asyncio.sleep(0.1)  # let the half arrive before the reset
    _reset(writer)


async def _truncate_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _half_body(writer, model)


async def _one_event(writer: asyncio.StreamWriter, model: str) -> None:
    await _send(writer, _sse_head())
    await _send(writer, _chunked(chat_events(model, ["hel"])[0]))


async def _stall_stream(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _one_event(writer, model)
    await _forever()


async def _reset_stream(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _one_event(writer, model)
    await asyncio.sleep(0.2)  # the event reaches the client before the reset
    _reset(writer)


async def _stall_stream_early(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    await _send(writer, _chunked(chat_events(model, ["hel"])[0][:20]))
    await _forever()


async def _reset_stream_early(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    await asyncio.sleep(0.1)
    _reset(writer)


async def _reset_stream_partial(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    await _send(writer, _chunked(chat_events(model, ["hel"])[0][:20]))
    await asyncio.sleep(0.2)  # the half event reaches the gateway before the reset
    _reset(writer)


async def _huge_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _ok(writer, model, False, "x" * HUGE)


async def _huge_stream(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    for event in chat_events(model, ["y" * 4096] * (HUGE // 4096)):
        await _send(writer, _chunked(event))
    await _send(writer, b"0\r\n\r\n")


async def _trickle(writer: asyncio.StreamWriter, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        await _send(writer, data[start : start + piece])
        await asyncio.sleep(TRICKLE_GAP)


async def _trickle_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    document = chat_document(model)
    await _send(
        writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(document)))])
    )
    await _trickle(writer, document, 16)  # about 20 pieces: the body takes several times `idle`


async def _trickle_stream(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    events = chat_events(model, ["hel", "lo"])
    for event in events[:2]:  # each of these takes longer than `idle` to arrive whole
        await _trickle(writer, _chunked(event), 16)
    for event in events[2:]:
        await _send(writer, _chunked(event))
    await _send(writer, b"0\r\n\r\n")


async def _endless_event(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    """Bytes steadily, well within `idle` of each other, that never end an SSE event."""
    await _send(writer, _sse_head())
    piece = _chunked(b"data: " + b"x" * 65536)
    while True:
        await _send(writer, piece)
        await asyncio.sleep(0.005)


async def _late_body(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    document = chat_document(model)
    await _send(
        writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(document)))])
    )
    await asyncio.sleep(LATE)
    await _send(writer, document)


async def _late_stream(writer: asyncio.StreamWriter, model: str, stream: bool) -> None:
    await _send(writer, _sse_head())
    await asyncio.sleep(LATE)
    for event in chat_events(model, ["hel", "lo"]):
        await _send(writer, _chunked(event))
    await _send(writer, b"0\r\n\r\n")


BEHAVIOURS: dict[str, Callable[[asyncio.StreamWriter, str, bool], Awaitable[None]]] = {
    "ok": _ok,
    "close": _close,
    "garbage": _garbage,
    "hang": _hang,
    "stall-body": _stall_body,
    "reset-body": _reset_body,
    "truncate-body": _truncate_body,
    "stall-stream": _stall_stream,
    "reset-stream": _reset_stream,
    "stall-stream-early": _stall_stream_early,
    "reset-stream-early": _reset_stream_early,
    "reset-stream-partial": _reset_stream_partial,
    "429": _error(429),
    "429-ra-seconds": _error(429, [("Retry-After", "7")]),
    "429-ra-date": _error(429, [("Retry-After", "DATE")]),
    "429-ra-absurd": _error(429, [("Retry-After", "99999999999")]),
    "429-ra-garbage": _error(429, [("Retry-After", "in a while")]),
    "503": _error(503),
    "503-ra-seconds": _error(503, [("Retry-After", "7")]),
    "503-ra-date": _error(503, [("Retry-After", "DATE")]),
    "503-text-ra-seconds": _error(
        503, [("Retry-After", "7")], body=b"Service Unavailable", content_type="text/plain"
    ),
    "502-html": _error(502, body=ERROR_PAGE.encode(), content_type="text/html"),
    "500-html": _error(500, body=ERROR_PAGE.encode(), content_type="text/html"),
    "429-text": _error(429, body=b"Too Many Requests", content_type="text/plain"),
    "503-empty": _error(503, body=b"", content_type="text/plain"),
    "huge-body": _huge_body,
    "huge-stream": _huge_stream,
    "trickle-body": _trickle_body,
    "trickle-stream": _trickle_stream,
    "late-body": _late_body,
    "late-stream": _late_stream,
    "endless-event": _endless_event,
}


# ---------------------------------------------------------------------- the client's side


@dataclass
class Seen:
    """What the client saw, and what the gateway counted."""

    status: int
    shape: str
    size: int
    retry_after: str | None
    answered_by: str
    seconds: float
    body: bytes
    failures: tuple[tuple[str, str, int], ...] = ()

    def outcome(self) -> tuple[Any, ...]:
        return (self.status, self.shape, self.retry_after, self.answered_by, self.failures)


def expected(fault: Fault) -> tuple[Any, ...]:
    return (fault.status, fault.shape, fault.retry_after, fault.answered_by, tuple(sorted(fault.failures)))


def shape_of(content_type: str, body: bytes) -> str:
    if content_type.startswith("text/event-stream"):
        if b'data: {"error"' in body:
            return "sse-cut"
        return "sse" if body.endswith(b"data: [DONE]\n\n") else "sse-incomplete"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not-json"
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        return "error" if set(error) == {"message", "type", "param", "code"} else "error-other-shape"
    return "json" if isinstance(document, dict) and "choices" in document else "json-other"


async def ask(session: aiohttp.ClientSession, v1: str, model: str, stream: bool) -> Seen:
    """One chat completion through the gateway at `v1`; the result without `failures`."""
    started = time.monotonic()
    body = {"model": model, "messages": PROMPT, "stream": stream}
    async with session.post(f"{v1}/chat/completions", data=orjson.dumps(body)) as response:
        data = await response.read()
        backend = response.headers.get("x-routeway-backend", "")
        return Seen(
            response.status,
            shape_of(response.headers.get("Content-Type", ""), data),
            len(data),
            response.headers.get("Retry-After"),
            backend.rsplit("-", 1)[-1] if backend else "",
            time.monotonic() - started,
            data,
        )


def failures_of(
    samples: dict[tuple[str, str], float], route_backends: dict[str, str]
) -> tuple[tuple[str, str, int], ...]:
    """`(role, reason, count)` from `routeway_upstream_errors_total` samples by (backend id, reason)."""
    found = []
    for (backend, reason), value in samples.items():
        role = route_backends.get(backend)
        if role is not None and value:
            found.append((role, reason, int(value)))
    return tuple(sorted(found))
