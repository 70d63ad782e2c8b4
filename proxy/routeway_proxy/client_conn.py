"""The client connections of one serving process: read timeouts, a connection cap, half-close.

Why: aiohttp's server has a keep-alive timeout but no header-read or body-read timeout, so a
client that trickles its request line a byte a second, or never sends the body it announced,
holds a connection (and a slot of the kernel's and the worker's) indefinitely; nothing caps how
many connections a worker holds; and a client that shuts down its write side after sending its
request (`shutdown(SHUT_WR)`) loses its answer, because asyncio closes a transport on EOF
unless the protocol asks to keep it.

How: every client connection is a `ClientConnection`, a subclass of aiohttp's public
`web.RequestHandler` that only overrides protocol callbacks (`connection_made`,
`data_received`, `eof_received`, `connection_lost`) and `handle_error`, each calling the
original. A connection is in one phase at a time, with at most one deadline:

| phase | from | deadline | when it passes |
|---|---|---|---|
| idle | accepted; an answer finished | `headerTimeout` after accept, `idleTimeout` after an answer | closed, no answer |
| headers | the first byte of a request | `headerTimeout` after that byte | 408, then closed |
| body | the handler started, body incomplete | `bodyTimeout` after the last body byte | the handler's body read fails with 408; closed after that answer |
| busy | the whole request is in | none (routes and backends have their own timeouts) | |

Whatever the phase, answer bytes the client takes none of for `idleTimeout` end the
connection (`write_stalled`, `abort_write`: the sweep aborts it, which cancels the handler and
its upstream call); while they wait, the phase's deadline does not apply.

Deadlines are plain floats checked by one sweep per process (`ClientConnections`,
client_registry.py), every quarter of the shortest timeout (at most once a second), so a
request costs a few attribute writes and no timer; a deadline may pass up to one sweep
interval late. The body and busy phases begin with `start_request`, which every route
handler calls first (a plain call: a wrapping coroutine would cost a frame and a resume per
request), and end in `finish_response`, which aiohttp calls after every handler.

Beyond `maxPerWorker` open connections a new one is answered 503 at once and closed (counted
in `routeway_client_connections_closed{reason="over_limit"}`); the connections already open
are not touched. With several workers the kernel spreads connections, so a pod holds up to
`workers * maxPerWorker`.

Half-close: a FIN looks the same whether the client shut down only its write side or closed
the socket, so the moment decides. `shutdown(SHUT_WR)` right after a request sends the FIN
with the request's last bytes: EOF before the handler started, or within `HALF_CLOSE_WINDOW`
of the request's last byte with no byte of the answer sent yet, keeps the transport open for
writing; the request is answered (JSON or stream), and so is every request pipelined behind
it (their count read behind a seam, client_pipelining.py; without it only the one under way),
then the connection closes. A client that
had in fact gone that quickly is noticed once the answer is written to it (the peer's reset
fails the next write, which cancels the handler and with it the upstream call). A FIN later
than that, or once the answer has begun, is a client leaving, as before: the transport closes
and the handler and its upstream call are cancelled at once, even while the upstream is
silent. EOF in the middle of a body fails the body read with 400; EOF on an idle connection
closes it.

`client_site.py` listens with this protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

from aiohttp import web
from aiohttp.streams import StreamReader

from routeway_proxy.client_errors import answer_protocol_error
from routeway_proxy.client_pipelining import queued_requests
from routeway_proxy.client_registry import (
    BODY,
    BUSY,
    CLOSED,
    HEADERS,
    IDLE,
    LINGER,
    ClientConnections,
    ConnectionLimits,
)
from routeway_proxy.errors import ProxyError, make_error_response

__all__ = [
    "HALF_CLOSE_WINDOW",
    "ClientConnection",
    "ClientConnections",
    "ConnectionLimits",
    "start_request",
]


HALF_CLOSE_WINDOW = 0.25
"""Seconds after a request's last byte within which its client's FIN is taken for a half-close
(`shutdown(SHUT_WR)` sends it with the request) rather than for the client leaving."""


class ClientConnection(web.RequestHandler):
    """aiohttp's request handler with the phases and deadlines of the module docstring."""

    __slots__ = (
        "_complete_at",
        "_drained",
        "_eof",
        "_now",
        "_payload",
        "_registry",
        "_request",
        "_stalled_since",
        "_writer",
        "deadline",
        "phase",
    )

    def __init__(
        self,
        manager: web.Server,
        registry: ClientConnections,
        *,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._registry = registry
        self._now = loop.time
        self.phase = IDLE
        self.deadline = 0.0
        self._payload: StreamReader | None = None
        self._eof = False  # the client shut down its write side
        self._request: web.BaseRequest | None = None  # the request being handled
        self._complete_at = 0.0  # when its last byte arrived
        self._writer: Any = None  # the writer of the latest answer (its `output_size`)
        self._drained = 0  # bytes of it the client took, at the last sweep that saw a backlog
        self._stalled_since = 0.0  # since when the backlog has not shrunk (0: no backlog)

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        registry = self._registry
        if not registry.admit(self):
            self.phase = CLOSED
            refused = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
            refused.write(registry.over_limit_answer)
            refused.close()
            return
        self.deadline = self._now() + registry.limits.header_timeout
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase != BUSY:
            if phase == IDLE:
                self.phase = HEADERS
                self.deadline = self._now() + self._registry.limits.header_timeout
            elif phase in (BODY, LINGER):
                self.deadline = self._now() + self._registry.limits.body_timeout
            elif phase == CLOSED:
                return
        _base_data_received(self, data)
        if phase in (BODY, LINGER):
            payload = self._payload
            if payload is not None and payload.is_eof():  # the body is complete
                if phase == BODY:
                    self.phase = BUSY
                    self.deadline = 0.0
                    self._complete_at = self._now()
                else:
                    self._payload = None
                    self.phase = IDLE
                    self.deadline = self._now() + self._registry.limits.idle_timeout

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's type
        """Keep the write side open while a request is under way (half-close, see above)."""
        phase = self.phase
        if phase in (IDLE, CLOSED, LINGER):
            return None  # nothing to answer: the transport closes
        self._eof = True
        if phase == BODY:
            self._fail_body(_incomplete_body())
            return True
        request = self._request
        if request is not None and (
            request.writer.output_size > 0 or self._now() - self._complete_at > HALF_CLOSE_WINDOW
        ):
            return None  # a client leaving (see above): the transport closes, the handler is cancelled
        # HEADERS (the request may be complete and not started yet: `request_started` fails an
        # incomplete body) or BUSY: answer, then close; an incomplete request line or header
        # block is ended by the header deadline (408). With the queue known, the close waits
        # for the last pipelined request (`finish_response`); else it comes after this one.
        if queued_requests(self) is None:
            self.close()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.phase == CLOSED and self not in self._registry.open:
            return  # refused in connection_made: aiohttp never saw it
        self.phase = CLOSED
        self.deadline = 0.0
        self._payload = None
        self._request = None
        self._writer = None
        self._registry.release(self)
        super().connection_lost(exc)

    # --- aiohttp -----------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or handle, in the OpenAI shape and
        logged without the request's bytes (client_errors.py)."""
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response")
        return answer_protocol_error(self._registry.malformed, request, status, exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs with a traceback what goes wrong around a handler; a body the client
        sent undecodable (found while aiohttp reads what a handler left unread) is the
        client's mistake: one rate-limited line, as for a malformed request."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            peer = self.peername
            self._registry.malformed.note(
                logging.INFO,
                f"the body could not be decoded ({type(exc.__cause__ or exc).__name__})",
                None,
                peer[0] if isinstance(peer, tuple) else None,
            )
            return
        super().log_exception(*args, **kw)

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        """aiohttp's own 404 for a request target no route can match (`CONNECT host:443`, whose
        path is empty) becomes the OpenAI-shaped one; a plain call, no extra await. An answer
        made without a route handler (that 404, the 417 of an unknown `Expect`) ends the
        headers phase too: the connection is idle after it (or lingers over the body that
        request announced), not owed a 408. After a route handler (aiohttp calls this next in
        the same task, whether the handler returned or raised) the request is finished."""
        if self._eof and not queued_requests(self):
            self.close()  # half-closed: the last request it sent is being answered
        if self.phase == HEADERS:
            self._payload = request.content
            self.request_finished()
            if self.phase == LINGER:
                self.deadline = self._now() + self._registry.limits.body_timeout
        else:
            self.request_finished()
        if resp.__class__ is web.HTTPNotFound:
            resp = make_error_response(
                ProxyError(404, f"Unknown path: {request.method} {request.raw_path}", "not_found")
            )
        return _base_finish_response(self, request, resp, start_time)

    # --- phases from the request handlers (start_request, finish_response) ------------------

    def request_started(self, request: web.BaseRequest) -> None:
        if self.phase == CLOSED:
            return
        self._request = request
        self._writer = request.writer
        payload = request.content
        if payload.is_eof():
            self.phase = BUSY
            self.deadline = 0.0
            self._complete_at = self._now()
        else:
            self.phase = BODY
            self._payload = payload
            self.deadline = self._now() + self._registry.limits.body_timeout
            if self._eof:  # the rest of the body cannot come any more
                self._fail_body(_incomplete_body())

    def request_finished(self) -> None:
        self._request = None
        if self.phase == CLOSED:
            return
        payload = self._payload
        if payload is not None and not payload.is_eof() and payload.exception() is None:
            self.phase = LINGER  # aiohttp reads (and drops) the rest before the next request
            return
        self._payload = None
        self.phase = IDLE
        self.deadline = self._now() + self._registry.limits.idle_timeout

    def expire(self) -> bool:
        """The deadline passed (called by the sweep); False if there was nothing to end."""
        phase = self.phase
        self.deadline = 0.0
        if phase == HEADERS:
            self.phase = CLOSED
            if self.transport is not None:
                self.transport.write(self._registry.timeout_answer)
            self.force_close()
        elif phase == BODY:
            limit = self._registry.limits.body_timeout
            self._fail_body(
                ProxyError(
                    408,
                    f"The request body was not received in time (no data for {limit:g}s).",
                    "request_timeout",
                    headers={"Connection": "close"},
                )
            )
        elif phase in (IDLE, LINGER):
            self.phase = CLOSED
            self.force_close()
        else:
            return False
        return True

    def write_stalled(self, now: float, limit: float) -> bool | None:
        """Called by the sweep: None when no answer bytes wait in the transport, True when some
        have waited `limit` seconds without the client taking any (the kernel's buffers are
        full by then), False while it takes them. Progress is bytes drained (written minus
        still buffered), so a client reading slowly but steadily is never stalled, however full
        its buffer looks at each sweep."""
        transport = self.transport
        backlog = transport.get_write_buffer_size() if transport is not None else 0
        if not backlog:
            self._stalled_since = 0.0
            return None
        writer = self._writer
        drained = (writer.output_size if writer is not None else 0) - backlog
        if not self._stalled_since or drained != self._drained:
            self._drained = drained
            self._stalled_since = now
            return False
        return now - self._stalled_since >= limit

    def abort_write(self) -> None:
        """End a connection whose client stopped reading its answer: the transport is aborted
        (closing it would wait for a flush that never comes), so aiohttp cancels the handler
        (a client abort, 499) and with it the upstream call and its backend slot."""
        self.phase = CLOSED
        self.deadline = 0.0
        transport = self.transport
        if transport is not None:
            transport.abort()

    def _fail_body(self, error: ProxyError) -> None:
        """The handler's body read raises `error` (answered in the OpenAI shape); later bytes are
        dropped and the connection closes after that answer."""
        payload = self._payload
        self.phase = BUSY
        self.deadline = 0.0
        if payload is not None:
            payload.set_exception(error)
            payload.feed_eof()  # no lingering read of a body that will not come
        self._payload = None
        self.close()  # aiohttp drops what still arrives and closes after the answer


def _incomplete_body() -> ProxyError:
    return ProxyError(
        400,
        "The client closed its side before sending the whole request body.",
        "incomplete_body",
        headers={"Connection": "close"},
    )


_base_data_received = web.RequestHandler.data_received
_base_finish_response = web.RequestHandler.finish_response
"""aiohttp's originals, called by the overrides (a zero-argument `super()` builds an object
per call on Python 3.11)."""


def start_request(request: web.BaseRequest) -> None:
    """Every route handler calls this first, so its connection knows a request is being
    handled (the body and busy phases; `finish_response` ends them). On a connection of
    another kind (a test server) it does nothing."""
    connection = request.protocol
    if isinstance(connection, ClientConnection):
        connection.request_started(request)
