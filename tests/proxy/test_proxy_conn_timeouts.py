"""Client connections over raw sockets: read timeouts, the connection cap, half-close, pipelining.

Matrix (client_conn.py's phases):
- headers: a request line trickled byte by byte, headers trickled → 408 (OpenAI shape), closed;
- body: announced and never sent → 408 from the handler's read, closed; sent in pieces whose
  gaps are each shorter than the body timeout (longer in total) → served;
- idle: a fresh connection that sends nothing, a keep-alive connection after an answer → closed
  without a byte;
- busy: a request waiting on a slow upstream longer than every timeout is not cut;
- drain: a body still trickling when the listener closes is ended by the body timeout, not
  held for the drain's grace period;
- cap: beyond `max_per_worker` a new connection gets 503 and is closed, counted; the open ones
  are still served; a closed connection frees its place;
- pipelining: two requests in one write get two answers in order;
- an answer made without a route handler (aiohttp's 404 for `OPTIONS *`, the 417) leaves the
  connection idle: closed silently, no 408 after it.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web
from conn_rig import (
    SHORT,
    WAIT,
    chat,
    closed_by_peer,
    conn_gateway,
    read_answer,
    request_bytes,
    serve_ok,
    until,
)
from proxy_helpers import Upstream, make_backend, make_config, make_route
from routeway_proxy.app import APP_RUNNER_OPTIONS, create_proxy_app
from routeway_proxy.client_conn import ClientConnections, ConnectionLimits
from routeway_proxy.client_registry import BODY
from routeway_proxy.client_site import start_client_site
from routeway_proxy.runtime import ProxyRuntime


async def trickle(writer: asyncio.StreamWriter, data: bytes, gap: float) -> None:
    """Write `data` one byte at a time until done or the gateway closes."""
    with contextlib.suppress(ConnectionError, OSError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(gap)


async def test_a_trickled_request_line_gets_408_then_close(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        reader, writer = await gw.connect()
        sender = asyncio.create_task(trickle(writer, request_bytes() * 50, 0.05))
        answer = await read_answer(reader)
        assert answer.status == 408
        assert answer.error()["code"] == "request_timeout"
        assert answer.headers["connection"] == "close"
        assert await closed_by_peer(reader) == b""
        sender.cancel()
        assert gw.closed("header_timeout") == 1
        writer.close()


async def test_trickled_headers_get_408_then_close(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        reader, writer = await gw.connect()
        writer.write(b"GET /v1/models HTTP/1.1\r\n")  # the line at once, then the headers slowly
        sender = asyncio.create_task(trickle(writer, b"Host: gw\r\nX-Slow: " + b"a" * 400, 0.05))
        answer = await read_answer(reader)
        assert answer.status == 408
        assert answer.error()["type"] == "invalid_request_error"
        assert await closed_by_peer(reader) == b""
        sender.cancel()
        writer.close()


async def test_a_body_that_never_arrives_gets_408_then_close(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        body = chat()
        head = request_bytes("/v1/chat/completions", method="POST", body=body)
        writer.write(head[: len(head) - len(body) + 10])  # headers and 10 bytes of the body
        answer = await read_answer(reader)
        assert answer.status == 408
        assert answer.error()["code"] == "request_timeout"
        assert await closed_by_peer(reader) == b""
        assert upstream.seen == []
        assert gw.closed("body_timeout") == 1
        writer.close()


async def test_a_body_sent_slowly_within_the_gap_is_served(upstream: Upstream) -> None:
    """The body timeout is the gap between reads, not the whole body: 6 pieces 0.15 s apart
    (longer than the 0.4 s timeout in total) are one request."""
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        body = chat()
        head = request_bytes("/v1/chat/completions", method="POST", body=body)
        writer.write(head[: len(head) - len(body)])
        piece = len(body) // 6 + 1
        for start in range(0, len(body), piece):
            await asyncio.sleep(0.15)
            writer.write(body[start : start + piece])
        answer = await read_answer(reader)
        assert answer.status == 200, answer.body
        assert orjson.loads(answer.body)["object"] == "chat.completion"
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async with conn_gateway(SHORT) as gw:
        reader, writer = await gw.connect()
        assert await closed_by_peer(reader) == b""
        assert gw.closed("idle_timeout") == 1
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_answers(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        for _ in range(2):
            writer.write(request_bytes())
            assert (await read_answer(reader)).status == 200
        assert await closed_by_peer(reader) == b""  # no 408 on an idle connection
        assert gw.closed("header_timeout") == 0
        writer.close()


async def test_a_request_waiting_on_its_upstream_is_not_cut(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream, "gate")
        reader, writer = await gw.connect()
        writer.write(request_bytes("/v1/chat/completions", method="POST", body=chat(stream=True)))
        await asyncio.wait_for(upstream.entered.wait(), WAIT)
        await asyncio.sleep(4 * SHORT.header_timeout)  # every deadline would have passed by now
        upstream.release.set()
        answer = await read_answer(reader)
        assert answer.status == 200
        assert answer.body.rstrip().endswith(b"data: [DONE]")
        writer.close()


async def test_beyond_the_cap_new_connections_get_503_and_open_ones_are_served(upstream: Upstream) -> None:
    limits = ConnectionLimits(header_timeout=WAIT, body_timeout=WAIT, idle_timeout=WAIT, max_per_worker=3)
    async with conn_gateway(limits) as gw:
        serve_ok(gw, upstream)
        held = [await gw.connect() for _ in range(3)]
        await until(lambda: len(gw.connections.open) == 3)
        reader, writer = await gw.connect()
        answer = await read_answer(reader)
        assert answer.status == 503
        assert answer.error()["code"] == "too_many_connections"
        assert answer.headers["retry-after"] == "1"
        assert await closed_by_peer(reader) == b""
        writer.close()
        assert gw.closed("over_limit") == 1
        for held_reader, held_writer in held:  # the open ones are untouched
            held_writer.write(request_bytes())
            assert (await read_answer(held_reader)).status == 200
        held[0][1].close()  # one leaves: its place is free again
        await until(lambda: len(gw.connections.open) == 2)
        reader, writer = await gw.connect()
        writer.write(request_bytes())
        assert (await read_answer(reader)).status == 200
        assert gw.closed("over_limit") == 1
        for _, held_writer in [*held[1:], (reader, writer)]:
            held_writer.close()


async def test_pipelined_requests_are_answered_in_order(upstream: Upstream) -> None:
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        writer.write(
            request_bytes("/v1/chat/completions", method="POST", body=chat())
            + request_bytes("/v1/models/gpt")
            + request_bytes("/v1/nothing-here")
        )
        first, second, third = [await read_answer(reader) for _ in range(3)]
        assert first.status == 200 and orjson.loads(first.body)["object"] == "chat.completion"
        assert second.status == 200 and orjson.loads(second.body)["id"] == "gpt"
        assert third.status == 404 and third.error()["code"] == "not_found"
        writer.close()


async def test_a_stalled_body_during_a_drain_is_ended_by_the_body_timeout(upstream: Upstream) -> None:
    runtime = ProxyRuntime()
    connections = ClientConnections(SHORT, runtime.metrics)
    grace = 10 * WAIT  # what the drain would wait for a request in flight
    runner = web.AppRunner(create_proxy_app(runtime), **APP_RUNNER_OPTIONS, shutdown_timeout=grace)
    await runner.setup()
    site = await start_client_site(runner, connections, "127.0.0.1", 0)
    backend = make_backend("a", upstream.base("ok"))
    runtime.apply(make_config([backend], [make_route("gpt", [("a", 1)])]), {})
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    body = chat()
    writer.write(request_bytes("/v1/chat/completions", method="POST", body=body)[:-10])
    await until(lambda: any(c.phase == BODY for c in connections.open))
    drain = asyncio.create_task(runner.cleanup())  # the listener closes; the request is in flight
    answer = await read_answer(reader)
    assert answer.status == 408
    await asyncio.wait_for(drain, WAIT)  # over long before the grace period
    writer.close()


async def test_an_answer_made_without_a_route_handler_leaves_the_connection_idle(upstream: Upstream) -> None:
    """aiohttp's own 404 (`OPTIONS *`) and the 417 of an unknown `Expect` never reach a route
    handler (`start_request`, `finish_response`): the connection must still leave the headers phase, or the
    header deadline later writes an unsolicited 408 after the answer."""
    async with conn_gateway(SHORT) as gw:
        serve_ok(gw, upstream)
        for raw in (
            b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n",
            request_bytes("/v1/chat/completions", method="POST", headers={"Expect": "bogus"}),
        ):
            reader, writer = await gw.connect()
            writer.write(raw)
            assert (await read_answer(reader)).status in (404, 417)
            assert await closed_by_peer(reader) == b""  # closed idle, no second answer
            writer.close()
        # the body announced with the unknown expectation, sent anyway after the 417: dropped
        reader, writer = await gw.connect()
        writer.write(
            request_bytes("/v1/chat/completions", method="POST", headers={"Expect": "bogus"}, body=b"{}")[:-2]
        )
        assert (await read_answer(reader)).status == 417
        writer.write(b"{}")
        assert await closed_by_peer(reader) == b""
        writer.close()
        assert gw.closed("header_timeout") == 0
