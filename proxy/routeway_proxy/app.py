"""The client-facing aiohttp application: OpenAI-compatible endpoints in front of the routes.

Why it looks like this (aiohttp's background-tasks example): an app factory, typed `AppKey`s,
and a `cleanup_ctx` that owns the one shared `ClientSession` of the process (keep-alive pool,
no cookie jar so no state leaks between clients, no connection limit so the per-backend
`maxConcurrency` is the only limit), used through an `UpstreamClient` (`upstream_client.py`).

Serving it: run the app with `handler_cancellation=True` (`APP_RUNNER_OPTIONS`, for
`web.AppRunner`/`web.run_app`), so a client that disconnects cancels its handler and with it
the upstream request even while the upstream is silent. Without it a disconnect is noticed at
the next write only.

The client connections (read timeouts, the cap, half-close, aiohttp's own answers to requests
it cannot parse) are `client_conn.py`'s: serve this app through `client_site.start_client_site`.

Every answer is in the OpenAI shape: `_guard` (and `_answer_exception`, which the inference
handlers of `pipeline/handle.py` use the same way) turns `ProxyError`, wrong methods, unknown
paths and any unexpected exception (logged, never shown) into `{"error": {...}}` documents.
The inference endpoints' request path is `routeway_proxy.pipeline`, one module per stage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from routeway_proxy.admin import create_admin_app
from routeway_proxy.client_conn import start_request
from routeway_proxy.client_errors import UNREADABLE_BODY, expect_continue
from routeway_proxy.errors import INVALID_REQUEST, ProxyError, make_error_response, make_internal_error
from routeway_proxy.pipeline.admit import model_not_found
from routeway_proxy.pipeline.authenticate import authenticate, check_model
from routeway_proxy.pipeline.handle import (
    InferenceState,
    make_inference_handler,
    make_method_not_allowed,
    make_not_ready,
)
from routeway_proxy.providers import ENDPOINT_PATHS
from routeway_proxy.request_ids import REQUEST_ID_HEADER, assign_request_id
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATE_KEY = web.AppKey("routeway_proxy_state", InferenceState)


def create_proxy_app(runtime: ProxyRuntime) -> web.Application:
    """The client API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""
    app = web.Application(client_max_size=2**40)
    app[RUNTIME_KEY] = runtime
    state = InferenceState(runtime)
    app[_STATE_KEY] = state

    async def own_client_session(app: web.Application) -> AsyncIterator[None]:
        async for _ in _own_client_session(app):
            state.loop = asyncio.get_running_loop()
            state.client = UpstreamClient(app[SESSION_KEY], state.loop)
            yield
            state.client = None
            state.loop = None
        await runtime.cache.close()  # the shared-tier stores under way, then the Redis client
        runtime.metrics.ledger.flush()  # the last requests' accounting, before the loop ends
        await runtime.limits.close()  # pending settlements, then Redis and the shared table

    app.cleanup_ctx.append(own_client_session)
    for kind, path in ENDPOINT_PATHS.items():
        handler = make_inference_handler(kind, state, _answer_exception)  # guards itself
        _add_route(app, "/v1" + path, handler)
    _add_route(app, "/v1/models", _guard("GET", list_models))
    _add_route(app, "/v1/models/{model:.+}", _guard("GET", get_model))
    _add_route(app, "/{tail:.*}", _guard(None, _not_found))
    return app


def _add_route(app: web.Application, path: str, handler: Handler) -> None:
    """Every method on `path` (the handler calls `start_request` first: the connection layer's
    body and busy phases), and `Expect` is answered in the OpenAI shape."""
    app.router.add_route("*", path, handler, expect_handler=expect_continue)


async def _own_client_session(app: web.Application) -> AsyncIterator[None]:
    session = open_client_session()
    app[SESSION_KEY] = session
    yield
    await session.close()


def _guard(method: str | None, handler: Handler) -> Handler:
    """Wrap a handler so every error is an OpenAI-shaped answer and never a traceback.

    Used instead of a middleware (cheaper per request): each route accepts every method and
    answers 405 itself, and a catch-all route answers 404, both in the OpenAI shape. Every
    answer carries `x-request-id` and, with `--access-log`, writes its line.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        start_request(request)
        rid = assign_request_id(request)
        access = request.app[RUNTIME_KEY].metrics.access
        started = asyncio.get_running_loop().time() if access is not None else 0.0
        try:
            if method is not None and request.method != method:
                raise make_method_not_allowed(request, method)
            answer = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            answer = _answer_exception(request, exc)
        answer.headers[REQUEST_ID_HEADER] = rid
        if access is not None:  # the request log line of every answer (access_log.py)
            access.write_answer(request, answer.status, asyncio.get_running_loop().time() - started)
        return answer

    guarded.__name__ = getattr(handler, "__name__", "handler")
    return guarded


def _answer_exception(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The OpenAI-shaped answer for an exception a handler raised (called inside `except`,
    so `log.exception` has the traceback); a non-error HTTPException is raised again."""
    if isinstance(exc, ProxyError):
        return make_error_response(exc)
    if isinstance(exc, web.RequestPayloadError):  # the client's body: undecodable, cut short
        return make_error_response(UNREADABLE_BODY)
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
        raise make_not_ready()
    return table


def abort_in_flight(app: web.Application) -> int:
    """End every routed request of `app` now with a "shutting down" answer (see
    `Exchange.abort`); returns how many there were. For the end of a drain's grace period."""
    exchanges = list(app[_STATE_KEY].in_flight)
    for exchange in exchanges:
        exchange.abort()
    return len(exchanges)


async def list_models(request: web.Request) -> web.Response:
    """The models the caller may call (every served model for a gateway key or no auth)."""
    table = _require_table(request)
    caller = authenticate(table, request.headers)
    return web.Response(body=caller.models_body, content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    table = _require_table(request)
    caller = authenticate(table, request.headers)
    model = request.match_info["model"]
    check_model(caller, model)
    if model not in table.routes:
        raise model_not_found(model)
    return web.Response(body=orjson.dumps(render_model(model)), content_type="application/json")
