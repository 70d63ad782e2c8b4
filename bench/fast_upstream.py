"""The fastest upstream this machine can offer: a raw asyncio protocol answering fixed replies.

Why not `routeway mock-backend`: that is an aiohttp app, about as expensive per request as the
proxies under test, so it would be the bottleneck and hide their differences. This server
parses just enough HTTP/1.1 (request line, Content-Length, keep-alive, pipelining) to answer
every POST with one fixed `chat.completion` document, or, when the body asks for
`"stream": true`, with a fixed SSE stream (role chunk, 16 token chunks, finish chunk, usage
chunk, [DONE]) in chunked transfer encoding. GET answers a models list. uvloop when present.

Run: python bench/fast_upstream.py --port N [--workers K] [--stream-gap S]
(SO_REUSEPORT across K processes; S seconds between a stream's first event and the rest)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

CREATED = int(time.time())
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "the quick brown fox jumps over the lazy dog"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 9, "total_tokens": 17},
    },
    separators=(",", ":"),
).encode()


def _sse(chunk: dict[str, object]) -> bytes:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-model",
    }
    return b"data: " + json.dumps({**base, **chunk}, separators=(",", ":")).encode() + b"\n\n"


def _stream_events() -> list[bytes]:
    events = [
        _sse(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
    ]
    events += [
        _sse({"choices": [{"index": 0, "delta": {"content": f" token{i}"}, "finish_reason": None}]})
        for i in range(16)
    ]
    events.append(_sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    events.append(
        _sse({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}})
    )
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


PLAIN_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(COMPLETION)
    + COMPLETION
)
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM_BODY = _chunked(_stream_events())
STREAM_FIRST = _chunked(_stream_events()[:1])[: -len(b"0\r\n\r\n")]
STREAM_REST = _chunked(_stream_events()[1:])
MODELS = b'{"object":"list","data":[{"id":"bench-model","object":"model","created":0,"owned_by":"bench"}]}'
GET_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(MODELS),
    MODELS,
)


class FixedReplyProtocol(asyncio.Protocol):
    """One connection: buffer, cut whole requests, answer each with a prebuilt reply.

    With a stream gap, the head and first event go out at once and the rest `gap` seconds
    later, so a proxy's time to first byte is about relaying one event, not the whole stream;
    requests behind it on the same connection wait (HTTP/1.1 answers stay in order).
    """

    gap = 0.0

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.WriteTransport | None = None
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self.answer_buffered()

    def answer_buffered(self) -> None:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            assert self.transport is not None
            if head.startswith(b"get"):
                self.transport.write(GET_REPLY)
            elif b'"stream":true' not in body.replace(b" ", b""):
                self.transport.write(PLAIN_REPLY)
            elif self.gap <= 0:
                self.transport.write(STREAM_HEAD + STREAM_BODY)
            else:
                self.transport.write(STREAM_HEAD + STREAM_FIRST)
                self.streaming = True
                asyncio.get_running_loop().call_later(self.gap, self.finish_stream)
                return

    def finish_stream(self) -> None:
        self.streaming = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(STREAM_REST)
            self.answer_buffered()


async def serve(port: int, host: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(FixedReplyProtocol, host, port, reuse_port=True, backlog=4096)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--stream-gap", type=float, default=0.0, help="seconds between a stream's first event and the rest"
    )
    args = parser.parse_args()
    FixedReplyProtocol.gap = args.stream_gap
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            _run(args.port, args.host)
            os._exit(0)
        children.append(pid)
    _run(args.port, args.host)
    for child in children:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
    return 0


def _run(port: int, host: str) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, host))
    else:
        uvloop.run(serve(port, host))


if __name__ == "__main__":
    sys.exit(main())
