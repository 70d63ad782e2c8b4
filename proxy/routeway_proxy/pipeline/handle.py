"""The inference handler: the stages of `routeway_proxy.pipeline`, in order, for one request.

Written as one coroutine with the stages called inline (not a middleware chain): these
endpoints are the hot path, and each await level is a coroutine frame and a resume per request.
Every error becomes an OpenAI-shaped answer (`answer_exception`); a request refused before
routing is settled here, one routed is settled by its `Exchange`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from routeway_proxy.cache.control import CACHE_HEADER
from routeway_proxy.client_conn import start_request
from routeway_proxy.errors import ProxyError
from routeway_proxy.pipeline import cache, limit
from routeway_proxy.pipeline.admit import find_route, parse_request, read_body
from routeway_proxy.pipeline.attempts import Exchange
from routeway_proxy.pipeline.authenticate import Caller, authenticate, check_model
from routeway_proxy.pipeline.cache import CacheTicket
from routeway_proxy.pipeline.choose import choose_arm
from routeway_proxy.pipeline.settle import settle
from routeway_proxy.providers import EndpointKind
from routeway_proxy.request_ids import REQUEST_ID_HEADER, assign_request_id
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.table import RouteEntry
from routeway_proxy.upstream_client import UpstreamClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExceptionAnswer = Callable[[web.Request, Exception], web.StreamResponse]


class InferenceState:
    """What the inference handlers need, held by their closures: reading it through
    `request.app[...]` costs four Python calls per lookup on the hot path."""

    __slots__ = ("client", "in_flight", "loop", "runtime")

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.client: UpstreamClient | None = None
        # the loop serving the app, set at startup: asyncio.get_running_loop() is a getpid()
        # system call per request on Python 3.11
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight: set[Exchange] = set()  # routed requests being answered (for drain)


def make_not_ready() -> ProxyError:
    return ProxyError(
        503,
        "The gateway has no configuration yet.",
        "not_ready",
        "server_error",
        headers={"Retry-After": "1"},
    )


def make_method_not_allowed(request: web.Request, method: str) -> ProxyError:
    return ProxyError(
        405,
        f"Method {request.method} is not allowed on {request.path}.",
        "method_not_allowed",
        headers={"Allow": method},
    )


def make_inference_handler(
    kind: EndpointKind, state: InferenceState, answer_exception: ExceptionAnswer
) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        start_request(request)  # the connection's body and busy phases (client_conn.py)
        cache_result: str | None = None  # x-routeway-cache, once the route has a cache
        rid = assign_request_id(request)
        loop = state.loop
        if loop is None:  # only outside the app's startup..cleanup window
            loop = asyncio.get_running_loop()
        started = loop.time()
        logged = False  # the request's access-log line is written (or its exchange owns it)
        try:
            if request.method != "POST":
                raise make_method_not_allowed(request, "POST")
            runtime = state.runtime
            table = runtime.table
            if table is None:
                raise make_not_ready()
            route: RouteEntry | None = None
            ticket: CacheTicket | None = None
            reservation: limit.Reservation | None = None
            caller: Caller = table.gateway_caller  # an open gateway's: no header read
            try:
                # 1-2: admit and authenticate (authentication first: a stranger learns nothing
                # of the body rules or the routes); a client's model permission before the
                # route, so a model it may not use is 403 whether or not it exists
                if table.auth_required:
                    caller = authenticate(table, request.headers)
                limit_bytes = table.max_body_bytes
                length = request.content_length
                if length is not None and length <= limit_bytes:
                    raw = await request.read()
                else:
                    raw = await read_body(request, limit_bytes)  # 413, or no Content-Length
                body, model = parse_request(kind, raw)
                if caller.models is not None:
                    check_model(caller, model)
                route = find_route(table, model)
                client = state.client
                if client is None:  # only before startup or after cleanup
                    raise make_not_ready()
                # 3-4: the response cache (only on a route with one), then limits (only for a
                # limited route or caller). The lookup comes first because a hit spends no
                # tokens: it reserves a request but no tokens, so a token budget with no room
                # left still serves it (issue 13: a hit counts against request limits, not
                # token limits). The cache counts the request only once the limits admitted
                # it; a refusal on a cached route says `bypass` (nothing was answered from it).
                cached = None
                hit = None
                if route.config.cache is not None:
                    cache_result = "bypass"
                    cached, ticket, hit = await cache.lookup(
                        runtime.cache,
                        route,
                        kind,
                        body,
                        caller.client_id,
                        request.headers.get("Cache-Control"),
                    )
                member = caller.client
                client_limits = member.limits if member is not None else None
                if route.config.limits is not None or client_limits is not None:
                    reservation = await limit.reserve(
                        runtime.limits, route, body, caller.client_id, client_limits, hit=cached is not None
                    )
                if cached is not None:
                    cache_result = "hit"
                    runtime.cache.cache.count(route.id, "hit", hit)
                elif ticket is not None:
                    cache_result = ticket.result
                    runtime.cache.cache.count(route.id, ticket.result)
                else:  # the config changed under the request: no cache now
                    cache_result = None
            except ProxyError as error:
                pair = route.metrics if route is not None else table.unrouted
                seconds = loop.time() - started
                access = runtime.metrics.access
                if access is not None:
                    access.write(request, route, pair, error.status, seconds, None, caller, cache_result)
                logged = True
                settle(runtime.metrics.ledger, pair, error.status, seconds, None, caller)
                if reservation is not None:  # nothing was sent upstream
                    await reservation.settle(0)
                else:
                    # refused before the limit stage (400, 413, 403, 404): a limited client
                    # still gets its budgets' headers, read without reserving (`limit.peek`)
                    member = caller.client
                    if member is not None and member.limits is not None and not limit.decided_here(error):
                        error.headers.update(
                            await limit.peek(runtime.limits, caller.client_id, member.limits)
                        )
                raise
            except BaseException:  # a bug, or a client gone during the cache lookup
                if reservation is not None:  # nothing was sent upstream: release the tokens
                    await reservation.settle(0)
                raise
            if cached is not None:
                # a hit: a request of the route with no backend attempt and no upstream tokens
                # (limits: it reserved none, `charges_tokens`)
                seconds = loop.time() - started
                access = runtime.metrics.access
                if access is not None:  # a hit: no upstream tokens (the answer's usage is a replay)
                    access.write(request, route, route.metrics, cached.status, seconds, None, caller, "hit")
                settle(runtime.metrics.ledger, route.metrics, cached.status, seconds, None, caller)
                cached.headers[REQUEST_ID_HEADER] = rid
                if reservation is not None:  # a hit spends no upstream tokens
                    cached.headers.update(reservation.headers)
                    await reservation.settle(0)
                return cached
            # 5-8: arm, then the attempts, which relay the answer and settle the request
            if route.canary is None:  # the common case, inline: one arm, its sticky key
                arm = route
                sticky_name = route.sticky_header
                sticky_key = request.headers.get(sticky_name) if sticky_name else None
            else:
                arm, sticky_key = choose_arm(route, request.headers)
            exchange = Exchange(
                request, client, runtime.metrics, arm, kind, body, started, loop, sticky_key, caller, ticket
            )
            in_flight = state.in_flight
            in_flight.add(exchange)
            logged = True  # from here the exchange settles the request and writes its line
            try:
                if reservation is None:
                    response = await exchange.run()
                else:
                    response = await limit.run_limited(exchange, reservation)
            finally:
                in_flight.discard(exchange)
            if not response.prepared:  # a stream has them already (relay.py)
                response.headers[REQUEST_ID_HEADER] = rid
                if cache_result is not None:
                    response.headers[CACHE_HEADER] = cache_result
            return response
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            answer = answer_exception(request, exc)
            if not answer.prepared:
                answer.headers[REQUEST_ID_HEADER] = rid
                if cache_result is not None:
                    answer.headers[CACHE_HEADER] = cache_result
            if not logged:  # refused before the pipeline (405, 503 not ready), or a bug's 500
                access = state.runtime.metrics.access
                if access is not None:
                    access.write_answer(request, answer.status, loop.time() - started)
            return answer

    handle.__name__ = f"handle_{kind}"
    return handle
