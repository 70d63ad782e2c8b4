"""The HTTP client of a proxy process: one aiohttp session, its POSTs sent through its lower layers.

Why not `ClientSession.request()` for every upstream call: it orchestrates much the gateway
never uses — cookies, redirects, proxies, auth, netrc, tracing, middlewares, the retry of
idempotent methods, a per-request timeout handle — and that orchestration costs about a third
of the client side's CPU per request (bench/RESULTS.md, "Lean upstream POST").
`UpstreamClient.post` makes the calls `ClientSession._request` makes for one POST when none of
those features is in use: build a `ClientRequest`, take a pooled connection from the session's
connector, set the response parser's parameters, send, read the status line and headers. Everything that carries HTTP — the request writer, the response parser, keep-alive,
TLS, the connection pool — is still aiohttp's.

Why it is safe: the lean path is chosen once per process by a seam (`UPSTREAM_PATH`, see
`fastpaths.py`): aiohttp's private names are imported then, not at module load, and used only
when the installed release is one whose `ClientSession._request` the lean path was compared
with line by line (`COMPARED_AIOHTTP`) and still has the signatures it calls
(`load_lean_path`). Per session, the lean path is taken only when the session was created
with exactly the options under which it is equivalent (no cookie jar, no default headers or
auth, no tracing or middlewares, no proxy from the environment: `lean_path_problem`). Any
other case — a newer aiohttp, a moved name, `ROUTEWAY_FAST_PATHS=off` — sends through
`session.request()`: same behaviour, more CPU, and one log line says which path is active.
A test fails if the installed aiohttp loses the lean path, so an upgrade gets compared.
(One known difference of the fallback: `ClientSession.request()` merges a header repeated
under differently cased names into its last value; the lean path sends both, as given.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from routeway_proxy.fastpaths import Choice, Seam, fast_paths_refusal

if TYPE_CHECKING:
    from aiohttp.typedefs import LooseHeaders

__all__ = [
    "COMPARED_AIOHTTP",
    "UPSTREAM_PATH",
    "LeanPath",
    "UpstreamClient",
    "choose_upstream_path",
    "lean_path_problem",
    "load_lean_path",
    "open_client_session",
]

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
_NO_TRACES: list[Any] = []  # never appended to: connect() and send() only iterate it


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


COMPARED_AIOHTTP = frozenset({"3.14"})
"""aiohttp releases (major.minor) whose `ClientSession._request` the lean path was compared
with line by line. pyproject allows any 3.x: a release not listed here sends through
`session.request()` until it is compared and added."""


@dataclass(frozen=True, slots=True)
class LeanPath:
    """aiohttp's names the lean path calls, loaded and checked once (`load_lean_path`)."""

    release: str
    request_class: Any  # aiohttp.ClientRequest
    response_class: Any  # aiohttp.ClientResponse
    no_timer: Any  # helpers.TimerNoop(): what the session uses when a request has no total timeout
    unused_session_features: Mapping[str, Any]  # ClientSession attribute → its value when unused


def import_private_names() -> tuple[Any, Any]:
    """aiohttp's private names the lean path needs: (`ResponseHandler`, `TimerNoop`)."""
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.helpers import TimerNoop

    return ResponseHandler, TimerNoop


def load_lean_path(
    release: str | None = None, private_names: Callable[[], tuple[Any, Any]] = import_private_names
) -> LeanPath | str:
    """The lean path for the installed aiohttp, or why it cannot be used (never raises).

    `release`: the aiohttp version to judge (default: the installed one); `private_names`:
    where `ResponseHandler` and `TimerNoop` come from (a parameter so that a moved name can
    be tested without breaking aiohttp)."""
    release = release if release is not None else aiohttp.__version__
    if ".".join(release.split(".")[:2]) not in COMPARED_AIOHTTP:
        compared = ", ".join(sorted(COMPARED_AIOHTTP))
        return f"aiohttp {release} is not a release the lean path was compared with ({compared})"
    try:
        handler_class, timer_class = private_names()
        request_class, response_class = aiohttp.ClientRequest, aiohttp.ClientResponse
        parameters = tuple(inspect.signature(handler_class.set_response_params).parameters)[1:]
        if set(parameters) != set(_RESPONSE_PARAMETERS):
            return f"ResponseHandler.set_response_params takes {parameters}"
        connect = tuple(inspect.signature(aiohttp.BaseConnector.connect).parameters)
        if connect != ("self", "req", "traces", "timeout"):
            return f"BaseConnector.connect takes {connect}"
        request = inspect.signature(request_class.__init__).parameters
        for name in ("method", "url", "headers", "data", "loop", "response_class", "session", "ssl"):
            if name not in request:
                return f"ClientRequest() takes no {name!r}"
        if not inspect.iscoroutinefunction(request_class.send) or not inspect.iscoroutinefunction(
            response_class.start
        ):
            return "ClientRequest.send or ClientResponse.start is not a coroutine function"
        unused: dict[str, Any] = {
            "_trace_configs": [],
            "_middlewares": (),
            "_default_headers": CIMultiDict(),
            "_default_proxy": None,
            "_skip_auto_headers": frozenset(),
            "_raise_for_status": False,
            "_base_url": None,
            "_request_class": request_class,
            "_response_class": response_class,
        }
        return LeanPath(release, request_class, response_class, timer_class(), unused)
    except Exception as exc:  # a moved or changed private name: the public path, not a crash
        return f"aiohttp {release}'s internals differ: {type(exc).__name__}: {exc}"


def lean_path_problem(session: aiohttp.ClientSession, lean: LeanPath | str | None = None) -> str | None:
    """Why `session`'s POSTs cannot skip `ClientSession.request()`, or None when they can.

    `lean`: the loaded lean path or why there is none (default: `load_lean_path()`)."""
    if lean is None:
        lean = load_lean_path()
    if isinstance(lean, str):
        return lean
    private = (*_SESSION_SETTINGS.values(), *lean.unused_session_features, "_version")
    for attribute in private:
        if not hasattr(session, attribute):
            return f"ClientSession has no {attribute}"
    for attribute, unused in lean.unused_session_features.items():
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


def choose_upstream_path(
    environ: Mapping[str, str] = os.environ, load: Callable[[], LeanPath | str] = load_lean_path
) -> Choice[LeanPath | None]:
    """This process's upstream POST path and the line that says so (`UPSTREAM_PATH`):
    `load()` gives a `LeanPath` or why there is none."""
    refusal = fast_paths_refusal(environ)
    if refusal is not None:
        return Choice(None, f"upstream POSTs: ClientSession.request() ({refusal})")
    try:
        lean = load()
    except Exception as exc:  # a loader must not raise; if it does, it has failed
        lean = f"{type(exc).__name__}: {exc}"
    if isinstance(lean, str):
        return Choice(
            None, f"upstream POSTs: ClientSession.request(); the lean path is not used: {lean}", failed=True
        )
    return Choice(
        lean, f"upstream POSTs: the lean path (aiohttp {lean.release}, a release it was compared with)"
    )


UPSTREAM_PATH: Seam[LeanPath | None] = Seam(choose_upstream_path)
"""This process's upstream POST path, chosen when the first `UpstreamClient` is made."""


class UpstreamClient:
    """POSTs to backends over `session` (see the module docstring for the two paths).

    `lean_path`: "process" for this process's choice (`UPSTREAM_PATH`), a `LeanPath` to use it
    when the session allows, None to always send through `session.request()`. `lean` says
    which path this client takes.
    """

    __slots__ = (
        "_connector",
        "_loop",
        "_request_class",
        "_response_class",
        "_response_params",
        "lean",
        "session",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop | None = None,
        lean_path: LeanPath | Literal["process"] | None = "process",
    ) -> None:
        self.session = session
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        lean = UPSTREAM_PATH.get() if isinstance(lean_path, str) else lean_path
        self.lean = False
        if lean is not None:
            problem = lean_path_problem(session, lean)
            self.lean = problem is None
            if problem is not None:  # the gateway's own session never: a test holds that
                log.info("this session's upstream POSTs go through ClientSession.request(): %s", problem)
        connector = session.connector
        assert connector is not None or not self.lean
        self._connector = connector
        self._request_class: Any = lean.request_class if lean is not None else None
        self._response_class: Any = lean.response_class if lean is not None else None
        # set_response_params() arguments but the read timeout, as the session would pass them
        self._response_params: dict[str, Any] = {
            argument: getattr(session, attribute, None) for argument, attribute in _SESSION_SETTINGS.items()
        }
        self._response_params.update(
            timer=lean.no_timer if lean is not None else None,
            skip_payload=False,
            read_until_eof=True,
            timeout_ceil_threshold=getattr(connector, "_timeout_ceil_threshold", 5),
        )

    async def post(
        self, url: URL, payload: bytes, headers: LooseHeaders, timeouts: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
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
        request = self._request_class(
            "POST",
            url,
            headers=headers,
            data=payload,
            loop=self._loop,
            response_class=self._response_class,
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
            response: aiohttp.ClientResponse = await request.send(connection)
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
