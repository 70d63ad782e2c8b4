"""Relay: turn an upstream reply into the client's answer — a whole JSON document, or a
server-sent-event stream relayed as it arrives.

A document is buffered whole, so until it is complete nothing has reached the client: a
retryable status (429, 502, 503, 504) goes back to the attempt policy with the upstream's own
answer attached (relayed if no retry follows), and so does a body that breaks off or stalls
(`failures.py` says how each becomes the client's answer). A stream is relayed event by event
(`streaming.SSEUsageFilter` reads its usage and, when the client did not ask for it, drops the
usage-only event); its headers go out with its first event, so an upstream that fails before
that can still be retried, and once they went out it can only be cut, with an OpenAI error
event (`data: {"error": ...}`) that the OpenAI SDKs raise as an APIError. The idle bound is
the gap between bytes received, complete events or not: a slow but steady upstream is not
stalled; an event still unfinished after `MAX_EVENT_BYTES` counts as the upstream breaking off.

On a route with a response cache the request's `CacheTicket` (`exchange.cache`) is handed
the answer: a successful document as it is, a stream's upstream bytes as they arrive (before
the usage filter drops anything) and kept only once the stream ended; a stream's
`x-routeway-cache` header goes out with its other headers.

Every function here takes the request's `Exchange` and changes its state only through its
methods (`conclude`, `commit`) and `failures.py` (`fail`, `blame`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from routeway_proxy.cache.control import CACHE_HEADER
from routeway_proxy.errors import render_error_body
from routeway_proxy.headers import response_header_pairs
from routeway_proxy.pipeline.failures import answer_upstream_error, blame
from routeway_proxy.pipeline.policy import cut_status
from routeway_proxy.pipeline.settle import CLIENT_CLOSED
from routeway_proxy.providers import StreamDropped, UpstreamReply
from routeway_proxy.request_ids import REQUEST_ID_HEADER, request_id_of
from routeway_proxy.streaming import MAX_EVENT_BYTES, SSEUsageFilter
from routeway_proxy.table import TargetEntry
from routeway_proxy.timeouts import AttemptWatchdog

if TYPE_CHECKING:
    from routeway_proxy.pipeline.attempts import Exchange


async def answer(
    exchange: Exchange, target: TargetEntry, reply: UpstreamReply, watchdog: AttemptWatchdog
) -> web.StreamResponse:
    """Read the reply's body (a stream: relay it) and answer with it."""
    status = reply.status
    reply_headers = reply.headers
    # The first-byte bound lasts until the first body bytes, not just the headers: a
    # streaming server sends its headers at once and its first token much later, and
    # nothing has gone to the client yet, so a timeout here can still be retried.
    first = await reply.read_chunk()
    idle = target.backend.config.timeouts.idle
    if (
        exchange.stream
        and 200 <= status < 300
        and "text/event-stream" in reply_headers.get("Content-Type", "")
    ):
        watchdog.start_body(idle)
        return await relay_stream(exchange, target, reply, watchdog, first, status, reply_headers)
    parts = [first]
    if first and not reply.at_eof():
        # From here the bound is `idle` between chunks. When the whole body came in the
        # first chunk (the common case) nothing awaits again under the watchdog, so its
        # timer cannot fire before it is cancelled and needs no re-arming for `idle`.
        watchdog.start_body(idle)
        while True:
            chunk = await reply.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            watchdog.touch()
            if reply.at_eof():
                break
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return answer_document(exchange, target, status, reply_headers, body)


def answer_document(
    exchange: Exchange, target: TargetEntry, status: int, reply_headers: Mapping[str, str], body: bytes
) -> web.Response:
    """The answer for a whole (non-streamed) upstream body; raises `AttemptFailed` (through
    `failures.fail`) when the status may be retried elsewhere."""
    if status < 300:  # a success: the hot path, decided first
        response = web.Response(
            status=status, body=body, headers=response_header_pairs(reply_headers, target.header_items)
        )
        target.backend.health.record_success()
        exchange.conclude(status, target.metrics, body)
        ticket = exchange.cache
        if ticket is not None:
            ticket.keep_document(status, body)
        observer = exchange.route.observer
        if observer is not None:
            observer.succeeded(exchange.loop.time() - exchange.attempt_started)
        return response
    # 3xx-5xx: relayed or wrapped, retried elsewhere when retryable (pipeline/failures.py)
    return answer_upstream_error(exchange, target, status, reply_headers, body)


async def relay_stream(
    exchange: Exchange,
    target: TargetEntry,
    reply: UpstreamReply,
    watchdog: AttemptWatchdog,
    first_chunk: bytes,
    status: int,
    reply_headers: Mapping[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=status, headers=response_header_pairs(reply_headers, target.header_items)
    )
    response.headers[REQUEST_ID_HEADER] = request_id_of(exchange.request)
    if exchange.limit_headers:
        response.headers.update(exchange.limit_headers)
    sse = SSEUsageFilter(strip_usage_chunk=not exchange.client_wants_usage)
    ticket = exchange.cache
    assembler = None
    if ticket is not None:  # a route with a cache: say so before the headers go out
        response.headers[CACHE_HEADER] = ticket.result
        assembler = ticket.stream_assembler()
    first = True
    first_at = 0.0  # loop time of the first content chunk
    chunk = first_chunk
    loop = exchange.loop
    try:
        while chunk:
            if assembler is not None:
                assembler.feed(chunk)  # the upstream's bytes, usage chunk included
            out = sse.feed(chunk)
            if out:
                watchdog.pause()  # a slow client is not a stalled upstream
                if first:
                    # The headers go out with the first event: until then nothing reached the
                    # client, and a drop or stall is still retried (pipeline/failures.py).
                    first = False
                    first_at = loop.time()
                    target.metrics.ttft.observe(first_at - exchange.started)
                    await response.prepare(exchange.request)
                    exchange.commit(response, sse)
                await response.write(out)
            elif sse.pending_bytes > MAX_EVENT_BYTES:  # bytes that never end an event
                raise StreamDropped(f"an SSE event beyond {MAX_EVENT_BYTES} bytes")
            watchdog.touch()  # bytes arrived (a whole event or not): the upstream is not stalled
            chunk = await reply.read_chunk()
        if first:  # the stream ended without an event: its headers go out now
            await response.prepare(exchange.request)
            exchange.commit(response, sse)
        rest = sse.flush()
        if rest:
            await response.write(rest)
        await response.write_eof()
    except ConnectionError:
        exchange.conclude(CLIENT_CLOSED, target.metrics)  # client gone; leaving closes the upstream
        return response
    target.backend.health.record_success()
    exchange.conclude(status, target.metrics, sse.usage)
    if assembler is not None and ticket is not None:
        ticket.keep_stream(assembler)
    observer = exchange.route.observer
    if observer is not None:
        started = exchange.attempt_started
        observer.succeeded(loop.time() - started, first_at - started if not first else None)
    return response


async def cut_stream(exchange: Exchange, target: TargetEntry, reason: str) -> web.StreamResponse:
    """The stream broke after its headers went out: end it with an OpenAI error event."""
    response = exchange.response
    assert response is not None
    if exchange.sse is not None:
        exchange.sse.discard_pending()
    code = cut_status(reason)
    target.metrics.count_error(reason)
    observer = exchange.route.observer
    if observer is not None:
        observer.failed(reason)
    blame(exchange, target)
    exchange.conclude(code, target.metrics)
    message = (
        f"Route {exchange.route.id}: backend {target.backend.id} "
        f"{'stalled' if code == 504 else 'broke off'} mid-stream."
    )
    # Metric reasons are kebab-case like retryOn values; client error codes are snake_case
    # like every other OpenAI error code the gateway sends.
    code_name = "upstream_" + reason.replace("-", "_")
    event = b"data: " + render_error_body(message, "server_error", code_name) + b"\n\n"
    try:
        await response.write(event)
        await response.write_eof()
    except ConnectionError:
        pass
    return response
