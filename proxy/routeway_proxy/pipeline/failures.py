"""Failed attempts: what each way an upstream can fail becomes — the `Failure` the attempt
policy decides on, the backend's health (blame, a Retry-After hold), metrics and the log —
and the client's answer for an upstream error status.

Why apart from the driver (`attempts.py`): none of this runs on the success path, and every
failure is turned into its parts the same way wherever it was noticed (connecting, reading
the body, a timer), so the rules sit in one place:
- nothing reached the client yet (a refused connection, no first byte, a non-streamed answer
  or a stream that broke off or stalled before its first event): a `Failure`, which the
  policy may retry — a break-off counts as `5xx` (the client would get a 502), a stall as
  `timeout` (504); a stream cut after its headers went out never comes here (`relay.cut_stream`);
- an upstream error status: relayed when its body is an OpenAI error document, otherwise
  wrapped in the OpenAI shape with the same status: another JSON document as much as an HTML
  page, since either may echo the request's credential. The wrapper never quotes the
  upstream's body, only its media type and size;
- an upstream 3xx: answered `502 upstream_error` (wrapped the same way). The gateway follows
  no redirect, and relaying one would send the client, with its key, to a place the gateway's
  configuration never named (or, wrapped with its status, leave a redirect without a
  `Location`). A `Retry-After` (either form) is read, bounded, passed on to the
  client in delta-seconds, and on a 429 or 503 puts the backend on hold.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from routeway_proxy.errors import (
    ProxyError,
    make_upstream_failed,
    make_upstream_timeout,
    make_upstream_unreachable,
    render_error_body,
)
from routeway_proxy.headers import response_header_pairs
from routeway_proxy.pipeline.policy import RETRYABLE_STATUSES, Failure, parse_retry_after
from routeway_proxy.table import TargetEntry
from routeway_proxy.timeouts import AttemptTimeout

if TYPE_CHECKING:
    from routeway_proxy.pipeline.attempts import Exchange

log = logging.getLogger("routeway.proxy")

HOLDING_STATUSES = frozenset({429, 503})
"""Statuses whose Retry-After puts the backend on hold (RFC 9110 gives it that meaning there)."""

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}")


class AttemptFailed(Exception):
    """Carries a `Failure` out of an attempt to the loop in `Exchange.run`."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def fail(
    exchange: Exchange,
    target: TargetEntry,
    reason: str,
    retry_reason: str | None,
    error: ProxyError,
    answer: web.StreamResponse | None = None,
    health: bool = True,
    retry_after: float | None = None,
) -> AttemptFailed:
    """Count a failed attempt (and, with `health`, hold it against the backend), also
    against the arm's revision: a retry or fallback that answers does not undo it."""
    target.metrics.count_error(reason)
    observer = exchange.route.observer
    if observer is not None:
        observer.failed(reason)
    if health:
        blame(exchange, target)
    return AttemptFailed(Failure(reason, retry_reason, error, answer, retry_after))


def blame(exchange: Exchange, target: TargetEntry) -> None:
    """One failure more for the backend's outlier detection; log and count an ejection."""
    backend = target.backend
    if backend.health.record_failure():
        seconds = backend.health.ejection_remaining()
        metrics = exchange.metrics
        metrics.ejections.labels(backend.id).inc()
        metrics.ejected_until.labels(backend.id).set(time.time() + seconds)
        log.warning(
            "backend %s ejected for %.1fs after %d failures in a row",
            backend.id,
            seconds,
            backend.config.outlier_detection.consecutive_failures,
        )


def hold(exchange: Exchange, target: TargetEntry, seconds: float, status: int) -> None:
    """The backend answered `status` with a Retry-After of `seconds`: every request skips it
    until then. Counted and logged once per hold, not once per answer that extends it."""
    backend = target.backend
    health = backend.health
    was_held = health.is_held()
    if health.hold(seconds, status) and not was_held:
        metrics = exchange.metrics
        metrics.holds.labels(backend.id).inc()
        metrics.ejected_until.labels(backend.id).set(time.time() + seconds)
        log.info("backend %s answered %d with Retry-After: skipped for %.0fs", backend.id, status, seconds)


def _answer_redirect(
    exchange: Exchange, target: TargetEntry, status: int, reply_headers: Mapping[str, str], body: bytes
) -> web.Response:
    """An upstream 3xx: `502 upstream_error`, naming the status (never its `Location`, which
    may carry what the backend's URL holds). The backend is not blamed: it answered, and a
    redirect is its configuration's problem, which ejecting it would not mend."""
    backend = target.backend
    message = (
        f"Route {exchange.route.id}: backend {backend.id} answered {status}, a redirect "
        f"({describe_body(reply_headers, body)}); the gateway does not follow redirects."
    )
    error = ProxyError(502, message, "upstream_error", "server_error")
    response = web.Response(
        status=502,
        body=render_error_body(error.message, error.error_type, error.code),
        content_type="application/json",
        headers=target.headers,
    )
    target.metrics.count_error("redirect")
    backend.health.record_success()
    observer = exchange.route.observer
    if observer is not None:
        observer.answered(502)
    exchange.conclude(502, target.metrics)
    return response


def connect_failed(exchange: Exchange, target: TargetEntry, detail: str) -> AttemptFailed:
    backend = target.backend
    return fail(
        exchange,
        target,
        "connect-failure",
        "connect-failure",
        make_upstream_unreachable(
            f"Route {exchange.route.id}: could not connect to backend {backend.id} ({detail})."
        ),
    )


def dropped(exchange: Exchange, target: TargetEntry) -> AttemptFailed:
    """The upstream broke off after its headers, before anything reached the client."""
    return fail(
        exchange,
        target,
        "disconnect",
        "5xx",
        make_upstream_unreachable(
            f"Route {exchange.route.id}: backend {target.backend.id} closed the connection mid-answer."
        ),
    )


def timed_out(exchange: Exchange, target: TargetEntry, timeout: AttemptTimeout) -> AttemptFailed:
    """The failure of an attempt whose watchdog fired before anything reached the client."""
    backend = target.backend
    timeouts = backend.config.timeouts
    route_id = exchange.route.id
    if timeout.kind == "first-byte":
        return fail(
            exchange,
            target,
            "timeout",
            "timeout",
            make_upstream_timeout(
                f"Route {route_id}: backend {backend.id} sent no answer within {timeouts.first_byte}s."
            ),
        )
    if timeout.kind == "idle":
        return fail(
            exchange,
            target,
            "idle-timeout",
            "timeout",
            make_upstream_timeout(f"Route {route_id}: backend {backend.id} stalled for {timeouts.idle}s."),
        )
    return fail(
        exchange,
        target,
        "total-timeout",
        None,
        make_upstream_timeout(f"Route {route_id}: the request to backend {backend.id} ran out of time."),
    )


def body_kind(body: bytes) -> str:
    """ "openai" (an OpenAI error document), "json" (another JSON object) or "other"."""
    stripped = body.lstrip()
    if not stripped.startswith(b"{"):
        return "other"
    try:
        document = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return "other"
    if not isinstance(document, dict):
        return "other"
    return "openai" if isinstance(document.get("error"), dict) else "json"


def describe_body(reply_headers: Mapping[str, str], body: bytes) -> str:
    """What a non-JSON body was, without quoting it: its media type (when it is a plain one)
    and its size."""
    content_type = reply_headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    media = content_type if _MEDIA_TYPE.fullmatch(content_type) else "no usable type"
    return f"{media}, {len(body)} bytes" if body else "empty"


def wrapped_error(status: int, message: str) -> ProxyError:
    """The gateway's OpenAI-shaped answer standing for an upstream error it cannot relay."""
    if status >= 500:
        return make_upstream_failed(status, message)
    if status == 429:
        return ProxyError(status, message, "upstream_rate_limited", "requests")
    return ProxyError(
        status, message, "upstream_error", "invalid_request_error" if status >= 400 else "server_error"
    )


def answer_upstream_error(
    exchange: Exchange, target: TargetEntry, status: int, reply_headers: Mapping[str, str], body: bytes
) -> web.Response:
    """The client's answer for an upstream 3xx-5xx (whole body read); raises `AttemptFailed`
    when the status may be retried elsewhere."""
    backend = target.backend
    route_id = exchange.route.id
    if status < 400:
        return _answer_redirect(exchange, target, status, reply_headers, body)
    kind = body_kind(body)
    relayed = kind == "openai"
    if relayed:
        response = web.Response(
            status=status, body=body, headers=response_header_pairs(reply_headers, target.header_items)
        )
    else:
        what = "a JSON body that is no OpenAI error" if kind == "json" else "a non-JSON body"
        message = f"Route {route_id}: backend {backend.id} answered {status} with {what} ({describe_body(reply_headers, body)})."
        error = wrapped_error(status, message)
        response = web.Response(
            status=status,
            body=render_error_body(error.message, error.error_type, error.code),
            content_type="application/json",
            headers=target.headers,
        )
        response.headers.update(error.headers)
    retry_after = None
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(reply_headers.get("Retry-After"), time.time())
        if retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(retry_after))
        elif relayed and "Retry-After" in response.headers:
            del response.headers["Retry-After"]  # relayed, but unreadable: not passed on
    retry_reason = RETRYABLE_STATUSES.get(status)
    if retry_reason is not None:
        if retry_after and status in HOLDING_STATUSES:
            hold(exchange, target, retry_after, status)
        raise fail(
            exchange,
            target,
            retry_reason,
            retry_reason,
            make_upstream_failed(status, f"Route {route_id}: backend {backend.id} answered {status}."),
            response,
            health=status != 429,
            retry_after=retry_after,
        )
    if status >= 500:
        target.metrics.count_error("upstream-5xx")
        blame(exchange, target)
    else:
        backend.health.record_success()  # a 4xx is an answer: the backend works
    observer = exchange.route.observer
    if observer is not None:
        observer.answered(status)
    exchange.conclude(status, target.metrics)
    return response
