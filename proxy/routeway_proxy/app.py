"""The client-facing aiohttp application: OpenAI-compatible endpoints in front of the routes.

Why it looks like this (aiohttp's background-tasks example): an app factory, typed `AppKey`s,
and a `cleanup_ctx` that owns the one shared `ClientSession` of the process (keep-alive pool,
no cookie jar so no state leaks between clients, no connection limit so the per-backend
`maxConcurrency` is the only limit), used through an `UpstreamClient` (`upstream_client.py`).

Serving it: run the app with `handler_cancellation=True` (`APP_RUNNER_OPTIONS`, for
`web.AppRunner`/`web.run_app`), so a client that disconnects cancels its handler and with it
the upstream request even while the upstream is silent. Without it a disconnect is noticed at
the next write only.

Every answer is in the OpenAI shape: `_guard` (inlined in the inference handler) turns
`ProxyError`, wrong methods, unknown paths and any unexpected exception (logged, never shown)
into `{"error": {...}}` documents.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from routeway_proxy.admin import create_admin_app
from routeway_proxy.errors import (
    INVALID_REQUEST,
    ProxyError,
    make_bad_request,
    make_error_response,
    make_internal_error,
)
from routeway_proxy.forward import Forwarder
from routeway_proxy.headers import read_bearer_token
from routeway_proxy.providers import ENDPOINT_PATHS, EndpointKind
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.table import RoutingTable, render_model
from routeway_proxy.upstream_client import UpstreamClient, open_client_session

__all__ = [
    "APP_RUNNER_OPTIONS",
    "RUNTIME_KEY",
    "SESSION_KEY",
    "abort_in_flight",
    "create_admin_app",
    "create_proxy_app",
]

log = logging.getLogger("routeway.proxy")

RUNTIME_KEY = web.AppKey("routeway_runtime", ProxyRuntime)
SESSION_KEY = web.AppKey("routeway_session", aiohttp.ClientSession)

APP_RUNNER_OPTIONS: dict[str, Any] = {"handler_cancellation": True}
"""Keyword arguments for `web.AppRunner(app, **APP_RUNNER_OPTIONS)` / `web.run_app`."""

_REQUIRED_FIELD: dict[EndpointKind, str] = {
    "chat": "messages",
    "completions": "prompt",
    "embeddings": "input",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ProxyState:
    """What the inference handlers need, held by their closures: reading it through
    `request.app[...]` costs four Python calls per lookup (`app` property, match info,
    `__getitem__`) on the hot path. The app keys stay set for everything else."""

    __slots__ = ("client", "in_flight", "loop", "runtime")

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.client: UpstreamClient | None = None
        # the loop serving the app, set at startup: asyncio.get_running_loop() is a getpid()
        # system call per request on Python 3.11
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight: set[Forwarder] = set()  # routed requests being answered (for drain)


_STATE_KEY = web.AppKey("routeway_proxy_state", _ProxyState)


def create_proxy_app(runtime: ProxyRuntime) -> web.Application:
    """The client API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""
    app = web.Application(client_max_size=2**40)
    app[RUNTIME_KEY] = runtime
    state = _ProxyState(runtime)
    app[_STATE_KEY] = state

    async def own_client_session(app: web.Application) -> AsyncIterator[None]:
        async for _ in _own_client_session(app):
            state.loop = asyncio.get_running_loop()
            state.client = UpstreamClient(app[SESSION_KEY], state.loop)
            yield
            state.client = None
            state.loop = None
        runtime.metrics.ledger.flush()  # the last requests' accounting, before the loop ends

    app.cleanup_ctx.append(own_client_session)
    for kind, path in ENDPOINT_PATHS.items():
        app.router.add_route("*", "/v1" + path, _make_inference_handler(kind, state))  # guards itself
    app.router.add_route("*", "/v1/models", _guard("GET", list_models))
    app.router.add_route("*", "/v1/models/{model:.+}", _guard("GET", get_model))
    app.router.add_route("*", "/{tail:.*}", _guard(None, _not_found))
    return app


async def _own_client_session(app: web.Application) -> AsyncIterator[None]:
    session = open_client_session()
    app[SESSION_KEY] = session
    yield
    await session.close()


def _guard(method: str | None, handler: Handler) -> Handler:
    """Wrap a handler so every error is an OpenAI-shaped answer and never a traceback.

    Used instead of a middleware (cheaper per request): each route accepts every method and
    answers 405 itself, and a catch-all route answers 404, both in the OpenAI shape.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            if method is not None and request.method != method:
                raise _make_method_not_allowed(request, method)
            return await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _answer_exception(request, exc)

    guarded.__name__ = getattr(handler, "__name__", "handler")
    return guarded


def _make_method_not_allowed(request: web.Request, method: str) -> ProxyError:
    return ProxyError(
        405,
        f"Method {request.method} is not allowed on {request.path}.",
        "method_not_allowed",
        headers={"Allow": method},
    )


def _answer_exception(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The OpenAI-shaped answer for an exception a handler raised (called inside `except`,
    so `log.exception` has the traceback); a non-error HTTPException is raised again."""
    if isinstance(exc, ProxyError):
        return make_error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return make_error_response(_translate_http_exception(request, exc))
    log.exception("unhandled error answering %s %s", request.method, request.path)
    return make_error_response(make_internal_error())


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise ProxyError(404, f"Unknown path: {request.method} {request.path}", "not_found")


def _translate_http_exception(request: web.Request, exc: web.HTTPException) -> ProxyError:
    if exc.status == 404:
        return ProxyError(404, f"Unknown path: {request.method} {request.path}", "not_found")
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        return ProxyError(
            405,
            f"Method {request.method} is not allowed on {request.path}.",
            "method_not_allowed",
            headers={"Allow": allow} if allow else None,
        )
    if exc.status == 413:
        return ProxyError(413, "Request body is too large.", "request_too_large")
    return ProxyError(exc.status, exc.reason or "Request failed.", None, INVALID_REQUEST)


def _require_table(request: web.Request) -> RoutingTable:
    table = request.app[RUNTIME_KEY].table
    if table is None:
        raise _make_not_ready()
    return table


def _make_not_ready() -> ProxyError:
    return ProxyError(
        503,
        "The gateway has no configuration yet.",
        "not_ready",
        "server_error",
        headers={"Retry-After": "1"},
    )


def authenticate(table: RoutingTable, authorization: str | None) -> None:
    """401 unless the request carries one of the gateway's client keys (when any are set)."""
    if not table.auth_required:
        return
    token = read_bearer_token(authorization)
    accepted = False
    if token is not None:
        presented = token.encode()
        for key in table.client_keys:
            accepted |= hmac.compare_digest(presented, key)  # no early exit: constant time per key
    if not accepted:
        raise ProxyError(
            401,
            "Invalid or missing API key: send Authorization: Bearer <key>.",
            "invalid_api_key",
            INVALID_REQUEST,
            headers={"WWW-Authenticate": 'Bearer realm="routeway"'},
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise ProxyError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
    if length is not None:
        return await request.read()
    parts = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
        parts.append(chunk)
    return b"".join(parts)


def parse_request(kind: EndpointKind, raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON body and its `model`, or a 400 naming the offending field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise make_bad_request("Could not parse the request body as JSON.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise make_bad_request("The request body must be a JSON object.", None, "invalid_json")
    model = body.get("model")
    if model is None:
        raise make_bad_request("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise make_bad_request("'model' must be a non-empty string.", "model")
    required = _REQUIRED_FIELD[kind]
    if body.get(required) is None:
        raise make_bad_request(
            f"Missing required parameter: '{required}'.", required, "missing_required_parameter"
        )
    if kind == "chat" and not isinstance(body["messages"], list):
        raise make_bad_request("'messages' must be an array.", "messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise make_bad_request("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise make_bad_request("'stream_options' must be an object.", "stream_options")
    return body, model


def _make_inference_handler(kind: EndpointKind, state: _ProxyState) -> Handler:
    """`_guard("POST", ...)` and the routing of an inference request written as one coroutine:
    these endpoints are the hot path, and each await level is a coroutine frame and a resume
    per request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            if request.method != "POST":
                raise _make_method_not_allowed(request, "POST")
            runtime = state.runtime
            table = runtime.table
            if table is None:
                raise _make_not_ready()
            loop = state.loop
            if loop is None:  # only outside the app's startup..cleanup window
                loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                if table.auth_required:
                    authenticate(table, request.headers.get("Authorization"))
                limit = table.max_body_bytes
                length = request.content_length
                if length is not None and length <= limit:
                    raw = await request.read()
                else:
                    raw = await read_body(request, limit)  # 413, or a body without Content-Length
                body, model = parse_request(kind, raw)
                route = table.routes.get(model)
                if route is None:
                    raise ProxyError(
                        404,
                        f"The model '{model}' does not exist or you do not have access to it.",
                        "model_not_found",
                        param="model",
                    )
            except ProxyError as error:
                table.unrouted.count_request(error.status, loop.time() - started)
                raise
            client = state.client
            if client is None:  # only before startup or after cleanup
                raise _make_not_ready()
            forwarder = Forwarder(request, client, runtime.metrics, route, kind, body, started, loop)
            in_flight = state.in_flight
            in_flight.add(forwarder)
            try:
                return await forwarder.run()
            finally:
                in_flight.discard(forwarder)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _answer_exception(request, exc)

    handle.__name__ = f"handle_{kind}"
    return handle


def abort_in_flight(app: web.Application) -> int:
    """End every routed request of `app` now with a "shutting down" answer (see
    `Forwarder.abort`); returns how many there were. For the end of a drain's grace period."""
    forwarders = list(app[_STATE_KEY].in_flight)
    for forwarder in forwarders:
        forwarder.abort()
    return len(forwarders)


async def list_models(request: web.Request) -> web.Response:
    table = _require_table(request)
    authenticate(table, request.headers.get("Authorization"))
    return web.Response(body=table.models_body, content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    table = _require_table(request)
    authenticate(table, request.headers.get("Authorization"))
    model = request.match_info["model"]
    if model not in table.routes:
        raise ProxyError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            "model_not_found",
            param="model",
        )
    return web.Response(body=orjson.dumps(render_model(model)), content_type="application/json")
