"""Half-close over raw sockets, and a client leaving, through the connection layer.

Matrix: `shutdown(SHUT_WR)` right after the request, or just after the handler started → the
JSON answer, the whole stream, then the close; in the middle of a body → 400 `incomplete_body`, closed, nothing sent upstream; a
pipelined requests, then `shutdown(SHUT_WR)` → every one answered in order, then the close
(with aiohttp's request queue out of reach, `ROUTEWAY_FAST_PATHS=off`: the first only, as the
README says); a client that closes once its stream has begun, or before the first byte but later than the
half-close window → the handler and the upstream call are cancelled at once, as without the
connection layer.
"""

from __future__ import annotations

import asyncio

import orjson
from conn_rig import (
    SHORT,
    WAIT,
    chat,
    closed_by_peer,
    conn_gateway,
    held_upstream,
    read_answer,
    request_bytes,
    serve_ok,
    until,
)
from proxy_helpers import Upstream, make_backend, make_config, make_route
from routeway_proxy.client_conn import HALF_CLOSE_WINDOW
from routeway_proxy.client_pipelining import QUEUE_SEAM
from routeway_proxy.client_registry import BUSY


async def test_half_close_after_the_request_still_gets_the_json_answer(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat()))
        writer.write_eof()
        answer = await read_answer(reader)
        assert answer.status == 200
        assert orjson.loads(answer.body)["choices"][0]["message"]["content"]
        assert await closed_by_peer(reader) == b""
        writer.close()


async def test_half_close_after_the_request_still_gets_the_whole_stream(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream, "trickle")  # ten events 50 ms apart
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        writer.write_eof()
        answer = await read_answer(reader)
        assert answer.status == 200
        assert answer.body.count(b"data: {") == 11  # ten events and the finish chunk
        assert answer.body.rstrip().endswith(b"data: [DONE]")
        assert await closed_by_peer(reader) == b""
        writer.close()


async def test_pipelined_requests_then_a_half_close_get_every_answer(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        writer.write(
            request_bytes("/v1/chat/completions", method="POST", body=chat())
            + request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True))
            + request_bytes("/v1/models/gpt")
        )
        writer.write_eof()
        first = await read_answer(reader)
        assert first.status == 200 and orjson.loads(first.body)["object"] == "chat.completion"
        if QUEUE_SEAM.get():
            second, third = await read_answer(reader), await read_answer(reader)
            assert second.status == 200 and second.body.rstrip().endswith(b"data: [DONE]")
            assert third.status == 200 and orjson.loads(third.body)["id"] == "gpt"
            assert len(upstream.seen) == 2
        assert await closed_by_peer(reader) == b""
        assert gw.closed("idle_timeout") == 0  # closed after the last answer, not left idle
        writer.close()


async def test_half_close_in_the_middle_of_a_body_gets_400_then_close(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        body = chat()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=body)[:-5])
        writer.write_eof()
        answer = await read_answer(reader)
        assert answer.status == 400
        assert answer.error()["code"] == "incomplete_body"
        assert await closed_by_peer(reader) == b""
        assert upstream.seen == []
        writer.close()


async def test_a_client_leaving_mid_stream_cancels_the_upstream_call(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        # one event, then silence until released; the backend's own timeouts far beyond WAIT
        serve_ok(gw, upstream, "gate", first_byte=60.0, idle=60.0)
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        await asyncio.wait_for(reader.readuntil(b"\n\n"), WAIT)  # the head and the first event
        writer.close()  # a FIN, and nothing unread
        await asyncio.wait_for(upstream.cancel_seen.wait(), WAIT)
        assert upstream.cancelled == ["gate"]


async def test_a_client_leaving_before_the_first_byte_cancels_the_upstream_call(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream, "stall", first_byte=60.0, idle=60.0)  # never answers
        _reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat()))
        await asyncio.wait_for(upstream.entered.wait(), WAIT)
        await asyncio.sleep(2 * HALF_CLOSE_WINDOW)  # a client giving up, not a half-close
        writer.close()
        await asyncio.wait_for(upstream.cancel_seen.wait(), WAIT)
        assert upstream.cancelled == ["stall"]


async def test_a_half_close_arriving_just_after_the_handler_started_still_gets_the_answer() -> None:
    """The FIN may trail the request by a moment (a separate segment): within the window it is a
    half-close even though the handler is already running."""
    async with conn_gateway(SHORT) as gw, held_upstream() as held:
        backend = make_backend("a", held.url)
        gw.runtime.apply(make_config([backend], [make_route("gpt", [("a", 1)])]), {})
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat()))
        await until(lambda: any(c.phase == BUSY for c in gw.connections.open))
        writer.write_eof()
        await asyncio.wait_for(held.entered.wait(), WAIT)
        held.release.set()  # the answer begins only after the FIN was seen
        answer = await read_answer(reader)
        assert answer.status == 200
        assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "held answer"
        assert await closed_by_peer(reader) == b""
        writer.close()
