"""The HTTP client of a proxy process: one aiohttp session, its POSTs sent through its lower layers.

Why not `ClientSession.request()` for every upstream call: it orchestrates much the gateway
never uses — cookies, redirects, proxies, auth, netrc, tracing, middlewares, the retry of
idempotent methods, a per-request timeout handle — and that orchestration costs about a third
of the client side's CPU per request (bench: 10-20 us of 50-75 us in a tight loop, more in the
server). `UpstreamClient.post` makes the calls `ClientSession._request` makes for one POST when
none of those features is in use: build a `ClientRequest`, take a pooled connection from the
session's connector, set the response parser's parameters, send, read the status line and
headers. Everything that carries HTTP — the request writer, the response parser, keep-alive,
TLS, the connection pool — is still aiohttp's.

Why it is safe: the session is created here with exactly the options under which that is
equivalent (no cookie jar, no default headers or auth, no tracing or middlewares, no proxy from
the environment), and the lean path is used only when the installed aiohttp has the
signatures it was written against (`lean_path_problem`, checked once per session). Any other
aiohttp sends through `session.request()` — same behaviour, more CPU — and says why in the
log; a test fails if the pinned aiohttp loses the lean path, so an upgrade gets re-checked.
(One known difference of the fallback: `ClientSession.request()` merges a header repeated
under differently cased names into its last value; the lean path sends both, as given.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ClientResponse
from aiohttp.helpers import TimerNoop
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict
from yarl import URL

__all__ = ["UpstreamClient", "lean_path_problem", "open_client_session"]

log = logging.getLogger("routeway.proxy")

_RESPONSE_PARAMETERS = (
    "timer",
    "skip_payload",
    "read_until_eof",
    "auto_decompress",
    "read_timeout",
    "read_bufsize",
    "timeout_ceil_threshold",
    "max_line_size",
    "max_field_size",
    "max_headers",
)
_SESSION_SETTINGS = {  # set_response_params argument → the session attribute it comes from
    "read_bufsize": "_read_bufsize",
    "auto_decompress": "_auto_decompress",
    "max_line_size": "_max_line_size",
    "max_field_size": "_max_field_size",
    "max_headers": "_max_headers",
}
_UNUSED_SESSION_FEATURES: dict[str, Any] = {  # ClientSession attribute → its value when unused
    "_trace_configs": [],
    "_middlewares": (),
    "_default_headers": CIMultiDict(),
    "_default_proxy": None,
    "_skip_auto_headers": frozenset(),
    "_raise_for_status": False,
    "_base_url": None,
    "_request_class": ClientRequest,
    "_response_class": ClientResponse,
}
_NO_TRACES: list[Any] = []  # never appended to: connect() and send() only iterate it
_NO_TIMER = TimerNoop()  # what the session uses when a request has no total timeout


def open_client_session() -> aiohttp.ClientSession:
    """The process's one session: keep-alive pool, no cookie jar (no state leaks between
    clients), no connection limit (the per-backend `maxConcurrency` is the only one), no
    total timeout (the attempt watchdog bounds each call), nothing taken from the environment."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=30)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        # No skip_auto_headers: any value sends aiohttp down a slow header path on every request
        # (bench/RESULTS.md). The client's User-Agent is forwarded; without one, aiohttp's is.
        trust_env=False,
    )


CHECKED_AIOHTTP = ("3.14",)
"""aiohttp releases whose `ClientSession._request` the lean path was compared with line by line
(pyproject pins this range; widen both after comparing a new release)."""


def lean_path_problem(session: aiohttp.ClientSession) -> str | None:
    """Why `session`'s POSTs cannot skip `ClientSession.request()`, or None when they can."""
    release = ".".join(aiohttp.__version__.split(".")[:2])
    if release not in CHECKED_AIOHTTP:
        return f"aiohttp {aiohttp.__version__} is not one the lean path was checked against"
    parameters = tuple(inspect.signature(ResponseHandler.set_response_params).parameters)[1:]
    if set(parameters) != set(_RESPONSE_PARAMETERS):
        return f"ResponseHandler.set_response_params takes {parameters}"
    connect = tuple(inspect.signature(aiohttp.BaseConnector.connect).parameters)
    if connect != ("self", "req", "traces", "timeout"):
        return f"BaseConnector.connect takes {connect}"
    request = inspect.signature(ClientRequest.__init__).parameters
    for name in ("method", "url", "headers", "data", "loop", "response_class", "session", "ssl"):
        if name not in request:
            return f"ClientRequest() takes no {name!r}"
    if not inspect.iscoroutinefunction(ClientRequest.send) or not inspect.iscoroutinefunction(
        ClientResponse.start
    ):
        return "ClientRequest.send or ClientResponse.start is not a coroutine function"
    private = (*_SESSION_SETTINGS.values(), *_UNUSED_SESSION_FEATURES, "_version")
    for attribute in private:
        if not hasattr(session, attribute):
            return f"ClientSession has no {attribute}"
    for attribute, unused in _UNUSED_SESSION_FEATURES.items():
        if getattr(session, attribute) != unused:
            return f"the session sets {attribute.lstrip('_')}, which the lean path would ignore"
    if getattr(session, "_version") != aiohttp.HttpVersion11:  # noqa: B009  (private)
        return "the session does not speak HTTP/1.1"
    if session.auth is not None or session.trust_env:
        return "the session has auth or takes settings from the environment"
    if not isinstance(session.cookie_jar, aiohttp.DummyCookieJar):
        return "the session keeps cookies"
    if not isinstance(session.connector, aiohttp.BaseConnector):
        return "the session has no connector"
    return None


class UpstreamClient:
    """POSTs to backends over `session` (see the module docstring for the two paths)."""

    __slots__ = ("_connector", "_loop", "_response_params", "lean", "session")

    def __init__(self, session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.session = session
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        problem = lean_path_problem(session)
        self.lean = problem is None
        if problem is not None:
            log.info("upstream calls go through ClientSession.request(): %s", problem)
        connector = session.connector
        assert connector is not None or not self.lean
        self._connector = connector
        # set_response_params() arguments but the read timeout, as the session would pass them
        self._response_params: dict[str, Any] = {
            argument: getattr(session, attribute, None) for argument, attribute in _SESSION_SETTINGS.items()
        }
        self._response_params.update(
            timer=_NO_TIMER,
            skip_payload=False,
            read_until_eof=True,
            timeout_ceil_threshold=getattr(connector, "_timeout_ceil_threshold", 5),
        )

    async def post(
        self, url: URL, payload: bytes, headers: LooseHeaders, timeouts: aiohttp.ClientTimeout
    ) -> ClientResponse:
        """Send `payload` and return once the answer's status line and headers are read.

        Raises what `session.request()` raises for the same failure: `aiohttp.ClientError`
        subclasses (`ConnectionTimeoutError` for a connect timeout, `ClientOSError` for a raw
        `OSError`), `RuntimeError` once the session is closed. Redirects are never followed. A
        `total` bound goes through `session.request()`, which owns that timer. The caller
        releases or closes the response.
        """
        if not self.lean or timeouts.total is not None:  # a total bound needs the session's timer
            return await self.session.request(
                "POST", url, data=payload, headers=headers, allow_redirects=False, timeout=timeouts
            )
        connector = self._connector
        if connector is None or connector.closed:
            raise RuntimeError("Session is closed")
        request = ClientRequest(
            "POST",
            url,
            headers=headers,
            data=payload,
            loop=self._loop,
            response_class=ClientResponse,
            session=self.session,
            ssl=True,
        )
        try:
            connection = await connector.connect(request, traces=_NO_TRACES, timeout=timeouts)
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
        except aiohttp.ClientError:
            raise
        except OSError as exc:
            raise aiohttp.ClientOSError(*exc.args) from exc
        protocol = connection.protocol
        assert protocol is not None
        protocol.set_response_params(read_timeout=timeouts.sock_read, **self._response_params)
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException as exc:
            connection.close()
            if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
                if exc.errno is None and isinstance(exc, TimeoutError):
                    raise
                raise aiohttp.ClientOSError(*exc.args) from exc  # as the session wraps it
            raise
        # The session would now close the request's payload: a bytes payload holds nothing to
        # close, so that await is skipped.
        return response
