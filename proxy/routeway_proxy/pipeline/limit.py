"""Limit: reserve a request's share of its client's and route's request and token budgets
before it is sent, and settle the reservation from the upstream's usage afterwards.

A request is *limited* when its route has `limits` or its caller is a client with `limits`;
an unlimited one never gets here (`handle.py` checks one attribute), so the gateway without
limits pays nothing. A limited request:

- reserves 1 request and its estimated tokens (`limits.estimate`: prompt estimate plus
  `max_completion_tokens`/`max_tokens`, else the route's `defaultMaxTokens`) in every budget of
  the route and the client at once, or none (429 `rate_limit_exceeded` with `Retry-After`; 503
  when the store is down under `FailClosed`);
- carries OpenAI's `x-ratelimit-*` headers on every answer — success, error or stream — as
  they stood right after its own reservation (the tightest budget per dimension);
- settles from the upstream's usage (`tokens_used`) when its answer is over.

A request of a limited client refused before this stage (a bad body 400, 413, 403
`model_not_allowed`, 404 `model_not_found`) carries the headers too, from `peek`: the client's
budgets as they stand, nothing reserved. Only the client's: the route, and so its limits, is
not known yet at those refusals (a 404 has none). A store that fails the peek leaves the
answer without headers (never an error, never longer than the store's timeout).

The caller is passed in as `client_id` and `client_limits` (None: a gateway-wide key or an
open gateway), so this stage knows nothing of how the caller was authenticated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeway_proxy.errors import ProxyError
from routeway_proxy.limits.answer import LimitRefusal, rejection_error
from routeway_proxy.limits.estimate import DEFAULT_MAX_TOKENS, estimate_tokens
from routeway_proxy.limits.limiter import Admission, Limiter, Limits, Subject
from routeway_proxy.pipeline.settle import CLIENT_CLOSED
from routeway_proxy.streaming import find_document_usage

if TYPE_CHECKING:
    from aiohttp import web

    from routeway.proxyconfig import ClientLimits
    from routeway_proxy.limits.wiring import ProcessLimits
    from routeway_proxy.pipeline.attempts import Exchange
    from routeway_proxy.table import RouteEntry


class Reservation:
    """What a limited request holds between its reservation and its settlement."""

    __slots__ = ("admission", "limiter", "limits")

    def __init__(self, limits: ProcessLimits, limiter: Limiter, admission: Admission) -> None:
        self.limits = limits
        self.limiter = limiter  # the one that reserved: a config change may replace `limits.limiter`
        self.admission = admission

    @property
    def headers(self) -> dict[str, str]:
        return self.admission.headers

    async def settle(self, used: int | None) -> None:
        await self.limits.settle(self.limiter, self.admission.ticket, used)


def subjects_of(
    route: RouteEntry, client_id: str | None, client_limits: ClientLimits | None
) -> list[Subject]:
    subjects = []
    if client_id is not None and client_limits is not None:
        limits = Limits(
            client_limits.requests_per_minute, client_limits.tokens_per_minute, client_limits.tokens_per_day
        )
        if limits.any():
            subjects.append(Subject("client", client_id, limits))
    route_limits = route.config.limits
    limits = Limits()
    if route_limits is not None:
        limits = Limits(route_limits.requests_per_minute, route_limits.tokens_per_minute)
    if not subjects and not limits.any():
        return []
    # the route's subject even without limits of its own: it names the `route` metric label
    subjects.append(Subject("route", route.id, limits))
    return subjects


async def reserve(
    limits: ProcessLimits,
    route: RouteEntry,
    body: dict[str, Any],
    client_id: str | None = None,
    client_limits: ClientLimits | None = None,
    *,
    hit: bool = False,
) -> Reservation | None:
    """Reserve the request's budgets (None: nothing limits it); raises the 429/503 refusal.
    A cache `hit` reserves its request and no tokens: a token budget never refuses it."""
    subjects = subjects_of(route, client_id, client_limits)
    if not subjects:
        return None
    route_limits = route.config.limits
    default = route_limits.default_max_tokens if route_limits is not None else DEFAULT_MAX_TOKENS
    limiter = limits.limiter
    admission = await limiter.reserve(subjects, 0 if hit else estimate_tokens(body, default))
    if not admission.admitted:
        raise rejection_error(admission)
    return Reservation(limits, limiter, admission)


async def peek(limits: ProcessLimits, client_id: str | None, client_limits: ClientLimits) -> dict[str, str]:
    """The `x-ratelimit-*` headers of the client's budgets as they stand (`Limiter.peek`)."""
    if client_id is None:
        return {}
    subject = Subject(
        "client",
        client_id,
        Limits(
            client_limits.requests_per_minute, client_limits.tokens_per_minute, client_limits.tokens_per_day
        ),
    )
    return await limits.limiter.peek([subject])


def decided_here(error: ProxyError) -> bool:
    """Whether `error` is this stage's own refusal (it carries its headers, or its store failed)."""
    return isinstance(error, LimitRefusal)


async def run_limited(exchange: Exchange, reservation: Reservation) -> web.StreamResponse:
    """Answer the request (`exchange.run`) with the rate-limit headers, then settle it."""
    headers = reservation.headers
    exchange.limit_headers = headers  # a stream's headers go out from the relay
    try:
        response = await exchange.run()
    except ProxyError as error:
        error.headers.update(headers)
        await reservation.settle(tokens_used(exchange))
        raise
    except BaseException:
        await reservation.settle(tokens_used(exchange))
        raise
    if headers and not response.prepared:
        response.headers.update(headers)
    await reservation.settle(tokens_used(exchange))
    return response


def tokens_used(exchange: Exchange) -> int | None:
    """What the request spent, for its settlement; None when that is unknown (the reservation
    then stands as the charge).

    Known: an answer's usage (a JSON document's `usage`, a stream's usage event, which the
    gateway asks the upstream for); 0 for an answer given before any upstream output (an
    upstream error status, no backend reachable, a timeout before the first byte). Unknown: a
    success without usage, a stream cut mid-way, a client that left (the upstream may have
    been generating)."""
    outcome = exchange.outcome
    if outcome is None:
        return None
    code, _, usage = outcome
    if type(usage) is bytes:
        usage = find_document_usage(usage)
        if usage is None:
            return None if code < 300 else 0
    if isinstance(usage, tuple):
        return usage[0] + usage[1]
    if exchange.response is not None or code == CLIENT_CLOSED:
        return None  # a stream that was cut, or a client gone while the upstream worked
    return None if 200 <= code < 300 else 0
