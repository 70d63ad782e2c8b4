"""A client that stops reading its answer, through the connection layer (the sweep's write check).

Matrix:
- a stream the client never reads (a 4 KiB receive buffer), from an upstream that would send
  without end → the connection is aborted after the idle timeout without progress
  (`reason="write_timeout"`), the request is a client abort (499), the upstream call is
  cancelled and the backend's only slot (`maxConcurrency: 1`) serves the next request;
- a JSON answer larger than every buffer on the way, never read → aborted the same way;
- a client that reads slowly but steadily, for much longer than the timeout → served whole;
- the sweep's decision on a clock moved by hand: progress is bytes taken (written minus still
  buffered), so a backlog that looks the same at every sweep while the client takes bytes is
  no stall, and one that has not moved for the timeout is (loopback's kernel buffers grow to
  megabytes, so the end-to-end slow reader rarely leaves a backlog for a sweep to see).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from conn_rig import WAIT, ConnGateway, chat, closed_by_peer, conn_gateway, read_answer, request_bytes, until
from proxy_helpers import chat_chunk, chat_document, make_backend, make_config, make_route
from routeway_proxy.client_conn import ClientConnection, ClientConnections, ConnectionLimits

LIMITS = ConnectionLimits(header_timeout=5.0, body_timeout=5.0, idle_timeout=0.4, max_per_worker=64)
EVENT = chat_chunk("gpt", "x" * 16_000)  # one SSE event of about 16 KB
BIG_TEXT = "y" * 8_000_000  # a JSON answer far beyond the socket buffers on the way


@dataclass
class FloodUpstream:
    """Streams SSE events until the gateway goes away (noted in `gone`), or answers one large
    JSON document; `streams` counts the streams begun."""

    url: str = ""
    streams: int = 0
    stream_events: int | None = None  # None: without end
    gone: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def flood_upstream(stream_events: int | None = None) -> AsyncIterator[FloodUpstream]:
    state = FloodUpstream(stream_events=stream_events)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(chat_document("gpt", BIG_TEXT))
        state.streams += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        try:
            while state.stream_events is None or sent < state.stream_events:
                await response.write(EVENT)
                sent += 1
            await response.write(chat_chunk("gpt", None, "stop") + b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            state.gone.set()
            raise
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


async def connect_small(gw: ConnGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client whose kernel receive buffer is 4 KiB, as in the reproduction."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (gw.host, gw.port))
    return await asyncio.open_connection(sock=sock, limit=2**16)


def answered(gw: ConnGateway, code: str) -> float:
    total = 0.0
    for family in gw.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "routeway_requests_total" and sample.labels.get("code") == code:
                total += sample.value
    return total


def serve(gw: ConnGateway, upstream: FloodUpstream) -> None:
    # the backend's own timeouts far beyond the test: only the connection layer can end it
    backend = make_backend("a", upstream.url, first_byte=60.0, idle=60.0, max_concurrency=1)
    gw.runtime.apply(make_config([backend], [make_route("gpt", [("a", 1)])]), {})


async def test_a_stream_never_read_is_aborted_and_frees_the_upstream_and_its_slot() -> None:
    async with flood_upstream() as upstream, conn_gateway(LIMITS) as gw:
        serve(gw, upstream)
        reader, writer = await connect_small(gw)
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        await asyncio.wait_for(upstream.gone.wait(), WAIT)  # the upstream call was cancelled
        assert gw.closed("write_timeout") == 1
        await until(lambda: not gw.connections.open)
        await until(lambda: answered(gw, "499") == 1)
        writer.close()
        # the backend's only slot is free again: a request that reads its answer is served
        upstream.stream_events = 3
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        answer = await read_answer(reader)
        assert answer.status == 200 and answer.body.rstrip().endswith(b"data: [DONE]")
        assert (upstream.streams, gw.closed("write_timeout")) == (2, 1)
        writer.close()


async def test_a_json_answer_never_read_is_aborted() -> None:
    async with flood_upstream() as upstream, conn_gateway(LIMITS) as gw:
        serve(gw, upstream)
        reader, writer = await connect_small(gw)
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat()))
        await until(lambda: gw.closed("write_timeout") == 1)
        await until(lambda: not gw.connections.open)
        assert gw.closed("idle_timeout") == 0
        with contextlib.suppress(ConnectionError):
            await closed_by_peer(reader)
        writer.close()


async def test_a_client_reading_slowly_but_steadily_gets_the_whole_answer() -> None:
    async with flood_upstream(stream_events=30) as upstream, conn_gateway(LIMITS) as gw:
        serve(gw, upstream)
        reader, writer = await connect_small(gw)
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        received = bytearray()
        async with asyncio.timeout(4 * WAIT):
            while not (received.endswith(b"\r\n0\r\n\r\n") and b"data: [DONE]" in received):
                chunk = await reader.read(4096)
                assert chunk, "the gateway closed a connection whose client was reading"
                received += chunk
                await asyncio.sleep(0.02)  # about 200 KB/s: far slower than the upstream sends, and
                # the whole answer takes far longer than the 0.4 s without progress that ends one
        assert received.count(b"data: {") == 31
        assert gw.closed("write_timeout") == 0 and not upstream.gone.is_set()
        writer.close()


@dataclass
class Backlog:
    """What the sweep reads of a transport, and of the answer's writer, set by hand."""

    size: int = 0
    output_size: int = 0

    def get_write_buffer_size(self) -> int:
        return self.size


async def test_the_sweep_counts_bytes_taken_as_progress_not_the_backlog_size() -> None:
    async def never(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("no request is handled")

    loop = asyncio.get_running_loop()
    connection = ClientConnection(web.Server(never), ClientConnections(LIMITS), loop=loop)
    wire = Backlog()
    connection.transport = wire  # type: ignore[assignment]
    connection._writer = wire  # the answer's writer: bytes written so far
    assert connection.write_stalled(0.0, 0.4) is None  # nothing waits for the client
    wire.size, wire.output_size = 65_536, 100_000
    assert connection.write_stalled(1.0, 0.4) is False  # a backlog appears: the clock starts
    for now in (1.3, 1.6, 1.9, 2.2):  # the same backlog at each sweep, yet 16 KB taken each time
        wire.output_size += 16_384
        assert connection.write_stalled(now, 0.4) is False
    assert connection.write_stalled(2.5, 0.4) is False  # nothing taken for 0.3 s
    assert connection.write_stalled(2.7, 0.4) is True  # nothing taken for 0.5 s: stalled
    wire.size = 0
    assert connection.write_stalled(2.8, 0.4) is None  # drained: the clock is reset
