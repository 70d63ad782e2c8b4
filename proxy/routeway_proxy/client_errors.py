"""The answers aiohttp's server makes before a route handler runs, in the OpenAI error shape,
and how malformed requests are logged.

Why: aiohttp answers a request it cannot parse (bad request line, invalid header bytes, a line
longer than its limit, broken chunked framing) with a `text/plain` body that repeats the
offending bytes, and logs it at ERROR with a traceback whose message holds the same bytes: a
client key followed by a stray control byte reached both the log and the answer. A fuzzer wrote
one traceback per malformed request. Here every such answer is the OpenAI error document with
the right status (400, 431 for an over-long line, 417 for an unknown `Expect`), names only the
kind of error, and is logged at most `MALFORMED_LOG_BURST` times per `MALFORMED_LOG_WINDOW`
seconds per process at INFO (at DEBUG for non-HTTP traffic such as TLS on the plain port),
without any byte of the request: the exception's class and the peer address only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import http_exceptions, web
from aiohttp.http import HttpVersion11

from routeway_proxy.errors import (
    INVALID_REQUEST,
    SERVER_ERROR,
    ProxyError,
    make_error_response,
    make_internal_error,
    render_error_body,
)

__all__ = [
    "UNREADABLE_BODY",
    "MalformedRequestLog",
    "answer_protocol_error",
    "expect_continue",
    "raw_error_response",
]

log = logging.getLogger("routeway.proxy")

MALFORMED_LOG_WINDOW = 60.0
MALFORMED_LOG_BURST = 10


class MalformedRequestLog:
    """At most `burst` lines per `window` seconds; the next line after a quiet spell says how
    many were left out."""

    def __init__(
        self,
        *,
        window: float = MALFORMED_LOG_WINDOW,
        burst: int = MALFORMED_LOG_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._burst = burst
        self._clock = clock
        self._window_start = -window
        self._logged = 0
        self.suppressed = 0

    def note(self, level: int, what: str, status: int | None, peer: str | None) -> None:
        """One line (unless over the burst): `what` went wrong, `status` was answered (None:
        the connection was closed)."""
        if not log.isEnabledFor(level):
            return
        now = self._clock()
        if now - self._window_start >= self._window:
            self._window_start = now
            self._logged = 0
        if self._logged >= self._burst:
            self.suppressed += 1
            return
        self._logged += 1
        left_out = f" ({self.suppressed} more left out before this one)" if self.suppressed else ""
        self.suppressed = 0
        outcome = f"answered {status}" if status is not None else "closed the connection"
        log.log(level, "malformed request from %s: %s; %s%s", peer or "?", what, outcome, left_out)


_PARSER_ERRORS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    # (exception class, status, what the client and the log are told, code); first match wins
    (
        http_exceptions.LineTooLong,
        431,
        "a request line or header field is longer than the gateway accepts",
        "request_header_too_large",
    ),
    (http_exceptions.BadHttpMethod, 400, "the request line is not HTTP", "malformed_request"),
    (http_exceptions.BadStatusLine, 400, "the request line is malformed", "malformed_request"),
    (http_exceptions.InvalidURLError, 400, "the request target is malformed", "malformed_request"),
    (http_exceptions.InvalidHeader, 400, "a header is malformed", "malformed_request"),
    (
        http_exceptions.ContentEncodingError,
        400,
        "the body cannot be decoded as its Content-Encoding says",
        "malformed_request",
    ),
    (
        http_exceptions.PayloadEncodingError,
        400,
        "the body framing (Content-Length, Transfer-Encoding) is invalid",
        "malformed_request",
    ),
    (http_exceptions.HttpProcessingError, 400, "the request is not valid HTTP/1.1", "malformed_request"),
)


_TOO_MANY_HEADERS = ("Too many headers received", "Too many trailers received")
"""aiohttp's fixed messages for `max_headers` (a plain BadHttpMessage): 431 like a long line."""


UNREADABLE_BODY = ProxyError(
    400,
    "The request body could not be read: its Content-Encoding or framing is invalid.",
    "invalid_body",
    headers={"Connection": "close"},
)
"""A handler's body read failed in aiohttp's parser (`web.RequestPayloadError`)."""


def describe_parser_error(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, description, code) for one of aiohttp's parser errors; None for anything else."""
    if isinstance(exc, http_exceptions.HttpProcessingError) and exc.message in _TOO_MANY_HEADERS:
        return 431, "the request has more header fields than the gateway accepts", "request_header_too_large"
    for kind, status, what, code in _PARSER_ERRORS:
        if isinstance(exc, kind):
            return status, what, code
    return None


def answer_protocol_error(
    malformed: MalformedRequestLog, request: web.BaseRequest, status: int, exc: BaseException | None
) -> web.StreamResponse:
    """The answer for `RequestHandler.handle_error`: always closes the connection."""
    parsed = describe_parser_error(exc) if exc is not None else None
    if parsed is not None:
        code_status, what, code = parsed
        level = logging.DEBUG if isinstance(exc, http_exceptions.BadHttpMethod) else logging.INFO
        malformed.note(level, f"{what} ({type(exc).__name__})", code_status, request.remote)
        error = ProxyError(code_status, f"Malformed HTTP request: {what}.", code, INVALID_REQUEST)
    elif status == HTTPStatus.INTERNAL_SERVER_ERROR:
        log.error("unhandled error in the HTTP server", exc_info=exc)
        error = make_internal_error()
    elif status == HTTPStatus.GATEWAY_TIMEOUT:
        error = ProxyError(504, "The request took too long.", "timeout", SERVER_ERROR)
    else:
        phrase = _phrase(status)
        error = ProxyError(status, f"{phrase}.", None, INVALID_REQUEST if status < 500 else SERVER_ERROR)
    response = make_error_response(error)
    response.force_close()
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Request failed"


def raw_error_response(
    status: int,
    message: str,
    code: str,
    *,
    retry_after: str | None = None,
    error_type: str = INVALID_REQUEST,
) -> bytes:
    """A complete HTTP/1.1 answer with `Connection: close`, for writing to a transport when
    there is no request to answer through aiohttp (a refused connection, a header timeout)."""
    body = render_error_body(message, error_type, code)
    head = [
        f"HTTP/1.1 {status} {_phrase(status)}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


async def expect_continue(request: web.Request) -> None:
    """The routes' `Expect` handler: aiohttp's (100 Continue for `100-continue`), with the 417
    for any other expectation in the OpenAI shape and without repeating the header's value."""
    if request.version != HttpVersion11:
        return
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started (as aiohttp does)
        return
    body = render_error_body(
        "Only 'Expect: 100-continue' is supported.", INVALID_REQUEST, "expectation_failed"
    )
    request.protocol.close()  # the body may follow anyway: answer, then close
    raise web.HTTPExpectationFailed(
        text=body.decode(), content_type="application/json", headers={"Connection": "close"}
    )
