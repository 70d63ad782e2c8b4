"""Forwarding one routed request: candidates, retries, fallbacks, timeouts, relay, accounting.

Why one class per request (`Forwarder`): an attempt's outcome depends on request-wide state
(what was already sent to the client, the route deadline, which backends failed), and the
final answer and its metrics are decided once, at the end. The pure decisions live elsewhere
(`balancer`, `health`, `headers`, `streaming`); this module sequences them around I/O.

Attempt order: up to `1 + retries.attempts` weighted picks (sticky or smooth round-robin,
skipping ejected backends and, when possible, ones that already failed for this request), then
the fallbacks in order. A failure leads to the next candidate only if nothing reached the
client yet and its reason is in the route's `retryOn` (a backend with no free concurrency
slot is always skipped to the next). Exponential backoff with jitter separates attempts. The
route's `timeout` bounds everything, backoff included.

Final answer when every attempt failed: no concurrency slot → 503 + Retry-After; connection
failure or drop → 502; timeout → 504; an upstream 429/5xx answer → relayed as it was (its
body wrapped in the OpenAI error shape if it was not one already).
A stream that fails after its headers went out ends with an OpenAI error event
(`data: {"error": ...}`), which the OpenAI SDKs raise as an APIError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from routeway_proxy.balancer import pick_sticky
from routeway_proxy.errors import (
    ProxyError,
    make_overloaded,
    make_upstream_failed,
    make_upstream_timeout,
    make_upstream_unreachable,
    render_error_body,
)
from routeway_proxy.headers import response_header_pairs, upstream_header_pairs
from routeway_proxy.ledger import Usage
from routeway_proxy.metrics import PairMetrics, ProxyMetrics
from routeway_proxy.providers import ConnectFailure, EndpointKind, StreamDropped, UpstreamReply
from routeway_proxy.streaming import SSEUsageFilter
from routeway_proxy.table import RouteEntry, TargetEntry
from routeway_proxy.timeouts import AttemptTimeout, AttemptWatchdog
from routeway_proxy.upstream_client import UpstreamClient

log = logging.getLogger("routeway.proxy")

RETRYABLE_STATUSES = {429: "429", 502: "5xx", 503: "5xx", 504: "5xx"}
CLIENT_CLOSED = 499


class AttemptFailed(Exception):
    """An attempt failed before anything reached the client."""

    def __init__(
        self, reason: str, retry_reason: str | None, error: ProxyError, answer: web.Response | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason  # metric label
        self.retry_reason = retry_reason  # RetryReason it counts as, "overloaded", or None
        self.error = error
        self.answer = answer  # the upstream's own answer, relayed if this stays the last failure


class CandidatePlan:
    """Which target to try next for one request (see module docstring for the order)."""

    __slots__ = ("_failed", "_fallback_order", "_route", "_sticky_key", "_weighted_left")

    def __init__(self, route: RouteEntry, sticky_key: str | None, weighted_picks_taken: int = 0) -> None:
        """`weighted_picks_taken`: weighted picks the caller already made without a plan."""
        self._route = route
        self._sticky_key = sticky_key
        self._weighted_left = (
            1 + max(route.config.retries.attempts, 0) - weighted_picks_taken
            if route.has_weighted_targets
            else 0
        )
        self._failed: set[int] = set()
        self._fallback_order: list[TargetEntry] | None = None

    def has_more(self) -> bool:
        if self._weighted_left > 0:
            return True
        if self._fallback_order is None:
            return bool(self._route.fallbacks)
        return bool(self._fallback_order)

    def next(self) -> TargetEntry | None:
        route = self._route
        if self._weighted_left > 0:
            self._weighted_left -= 1
            index = self._pick_weighted()
            if index is not None:
                return route.targets[index]
            self._weighted_left = 0
        if self._fallback_order is None:
            healthy = [t for t in route.fallbacks if not t.backend.health.is_ejected()]
            ejected = [t for t in route.fallbacks if t.backend.health.is_ejected()]
            self._fallback_order = healthy + ejected
        if self._fallback_order:
            return self._fallback_order.pop(0)
        return None

    def mark_failed(self, target: TargetEntry) -> None:
        for i, candidate in enumerate(self._route.targets):
            if candidate is target:
                self._failed.add(i)

    def _pick_weighted(self) -> int | None:
        route = self._route
        targets = route.targets
        if not self._failed and none_ever_ejected(targets):  # the common case
            if self._sticky_key is None:
                return route.balancer.pick(())
            return self._pick(())
        ejected = {i for i, t in enumerate(targets) if t.target.weight > 0 and t.backend.health.is_ejected()}
        failed = self._failed
        if not ejected and not failed:
            return self._pick(())
        live = [i for i, t in enumerate(targets) if t.target.weight > 0 and i not in ejected]
        if live:
            fresh_excluded = ejected | failed
            if any(i not in failed for i in live):
                return self._pick(fresh_excluded)
            return self._pick(ejected)  # every live target failed once: try one of them again
        # every weighted target is ejected: a healthy fallback goes first
        if any(not t.backend.health.is_ejected() for t in route.fallbacks):
            return None
        if any(i not in failed for i, t in enumerate(targets) if t.target.weight > 0):
            return self._pick(failed)
        return self._pick(())

    def _pick(self, excluded: set[int] | tuple[()]) -> int | None:
        route = self._route
        if self._sticky_key is not None:
            return pick_sticky(self._sticky_key, route.target_keys, route.balancer.weights, excluded)
        return route.balancer.pick(excluded)


def none_ever_ejected(targets: tuple[TargetEntry, ...]) -> bool:
    """No backend of `targets` was ever ejected (`ejected_until` stays set once one was): the
    common case, where their health needs no closer look. (A loop, not `all()` over a
    generator: this runs on every request, usually over one or two targets.)"""
    for candidate in targets:  # noqa: SIM110  (see the docstring)
        if candidate.backend.health.ejected_until is not None:
            return False
    return True


def pick_first_target(
    route: RouteEntry, sticky_key: str | None
) -> tuple[TargetEntry | None, CandidatePlan | None]:
    """The first target, and the plan if one had to be built for it. The common case (no
    stickiness, no backend of the route ever ejected) is one balancer pick — or none, when the
    route has a single weighted target — without a `CandidatePlan`; the plan for the attempts after it is then
    `CandidatePlan(route, None, weighted_picks_taken=1)`, in exactly the state a plan would
    have reached after its own first pick (property-tested)."""
    if sticky_key is None and route.has_weighted_targets and none_ever_ejected(route.targets):
        only = route.only_target
        if only is not None:  # one weighted target: the balancer would pick it, state unchanged
            return only, None
        index = route.balancer.pick(())
        if index is not None:
            return route.targets[index], None
    plan = CandidatePlan(route, sticky_key)
    return plan.next(), plan


def compute_backoff(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    delay = min(cap, base * (2.0 ** max(retry - 1, 0)))
    return delay / 2 + random.uniform(0, delay / 2)


def is_openai_error(body: bytes) -> bool:
    if not body.startswith(b"{") or b'"error"' not in body:
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and isinstance(document.get("error"), dict)


class Forwarder:
    """Answers one request already matched to `route`."""

    __slots__ = (
        "_aborted",
        "_filter",
        "_payload",
        "_payload_model",
        "_plan",
        "_recorded",
        "_response",
        "_target",
        "_task",
        "base_headers",
        "body",
        "client",
        "client_wants_usage",
        "deadline",
        "headers",
        "kind",
        "loop",
        "metrics",
        "request",
        "route",
        "started",
        "stream",
    )

    def __init__(
        self,
        request: web.Request,
        client: UpstreamClient,
        metrics: ProxyMetrics,
        route: RouteEntry,
        kind: EndpointKind,
        body: dict[str, Any],
        started: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.request = request
        self.client = client
        self.metrics = metrics
        self.route = route
        self.kind = kind
        self.body = body
        self.started = started
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        stream = self.stream = kind != "embeddings" and body.get("stream") is True
        if stream:
            options = body.get("stream_options")
            self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        else:
            self.client_wants_usage = False
        timeout = route.timeout
        self.deadline = started + timeout if timeout else None
        # tuples: every attempt shares the base, so none can change what another sends
        self.base_headers: tuple[tuple[str, str], ...] = tuple(
            upstream_header_pairs(request.headers, client_address=request.remote, scheme=request.scheme)
        )
        self.headers = self.base_headers  # the current attempt's: with its credential
        self._payload_model: str | None = None  # the model `_payload` was serialised for
        self._payload = b""
        self._plan: CandidatePlan | None = None  # built once an attempt failed (or not the common case)
        # a prepared streamed answer, once its headers went to the client
        self._response: web.StreamResponse | None = None
        self._filter: SSEUsageFilter | None = None
        self._target: TargetEntry | None = None
        self._recorded = False
        self._aborted = False
        self._task: asyncio.Task[Any] | None = None

    def abort(self) -> None:
        """End this request now with a "shutting down" answer (a stream: an error event), as a
        drain's grace period ends; the backend is not blamed for it."""
        task = self._task
        if task is not None and not task.done() and not self._aborted:
            self._aborted = True
            task.cancel()

    async def run(self) -> web.StreamResponse:
        in_flight = self.route.in_flight
        in_flight.inc(1)
        self._task = asyncio.current_task(self.loop)
        try:
            route = self.route
            sticky_name = route.sticky_header
            sticky_key = self.request.headers.get(sticky_name) if sticky_name else None
            target, self._plan = pick_first_target(route, sticky_key)
            failure: AttemptFailed | None = None
            previous: TargetEntry | None = None
            attempt = 0
            while target is not None:
                if failure is not None and previous is not None:
                    previous.metrics.count_retry(failure.reason)
                    if failure.retry_reason != "overloaded":
                        retries = route.config.retries
                        delay = compute_backoff(attempt, retries.backoff_base, retries.backoff_max)
                        if self.deadline is not None and self.loop.time() + delay >= self.deadline:
                            failure = self._route_timed_out()
                            break
                        await asyncio.sleep(delay)
                attempt += 1
                self._target = target
                try:
                    return await self._attempt(target)
                except AttemptFailed as failed:
                    failure = failed
                    previous = target
                    plan = self._remaining_plan()
                    plan.mark_failed(target)
                    if failed.retry_reason is None or (
                        failed.retry_reason != "overloaded" and failed.retry_reason not in route.retry_on
                    ):
                        break
                    if self.deadline is not None and self.loop.time() >= self.deadline:
                        failure = self._route_timed_out()
                        break
                    target = plan.next()
            return self._answer_failure(failure)
        except asyncio.CancelledError:
            task = self._task
            if self._aborted and task is not None and task.uncancel() == 0:
                return await self._answer_shutdown()  # our own cancellation, and only ours
            self._record(CLIENT_CLOSED)  # the client went away (handler cancellation)
            raise
        finally:
            in_flight.inc(-1)

    def _remaining_plan(self) -> CandidatePlan:
        """The plan of the attempts after the first (see `pick_first_target`)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = CandidatePlan(self.route, None, weighted_picks_taken=1)
        return plan

    async def _answer_shutdown(self) -> web.StreamResponse:
        message = "The gateway is shutting down; send the request again."
        target = self._target
        metrics = target.metrics if target is not None else self.route.metrics
        self._record(503, metrics)
        response = self._response
        if response is None:
            headers = {**(target.headers if target is not None else self.route.headers), "Retry-After": "1"}
            raise ProxyError(503, message, "gateway_shutting_down", "server_error", headers=headers)
        if self._filter is not None:
            self._filter.discard_pending()
        event = b"data: " + render_error_body(message, "server_error", "gateway_shutting_down") + b"\n\n"
        # RuntimeError: the stream had just ended (write after write_eof) when the abort came
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(event)
            await response.write_eof()
        return response

    def _route_timed_out(self) -> AttemptFailed:
        return AttemptFailed(
            "total-timeout",
            None,
            make_upstream_timeout(f"Route {self.route.id} timed out after {self.route.config.timeout}s."),
        )

    def _answer_failure(self, failure: AttemptFailed | None) -> web.StreamResponse:
        route = self.route
        target = self._target
        headers = target.headers if target is not None else route.headers
        metrics = target.metrics if target is not None else route.metrics
        if failure is None:
            error = make_overloaded(f"Route {route.id} has no backend to send to.")
            error.headers.update(headers)
            self._record(error.status, metrics)
            raise error
        if failure.answer is not None:
            self._record(failure.answer.status, metrics)
            return failure.answer
        error = self._all_down(failure.error)
        error.headers.update(headers)
        self._record(error.status, metrics)
        raise error

    def _all_down(self, error: ProxyError) -> ProxyError:
        """A 502/504 while every candidate of the route is ejected is not one backend's hiccup:
        the model is down. Say so with 503 and a Retry-After of the earliest re-admission, so
        clients back off instead of hammering backends that are known to fail."""
        if error.status not in (502, 504):
            return error
        route = self.route
        candidates = [t.backend for t in route.targets if t.target.weight > 0]
        candidates += [t.backend for t in route.fallbacks]
        if not candidates or not all(b.health.is_ejected() for b in candidates):
            return error
        wait = max(1, math.ceil(min(b.health.ejection_remaining() for b in candidates)))
        down = make_overloaded(
            f"Every backend of route {route.id} is ejected after repeated failures: {error.message}"
        )
        down.headers["Retry-After"] = str(wait)
        return down

    def _record(self, code: int, metrics: PairMetrics | None = None, usage: Usage = None) -> None:
        """Account the request once (see `ledger.py`): its final status, duration, tokens."""
        if self._recorded:
            return
        self._recorded = True
        if metrics is None:
            metrics = self._target.metrics if self._target is not None else self.route.metrics
        self.metrics.ledger.add(metrics, code, self.loop.time() - self.started, usage)

    def _prepare_call(self, target: TargetEntry) -> None:
        """`_payload` and `headers` for an attempt at `target`."""
        model = target.target.model
        body = self.body
        if model != self._payload_model:
            # The parsed client body is rewritten in place (attempts are sequential): no copy
            # per request, and a fallback to another model re-serialises it once.
            if self._payload_model is None and self.stream and not self.client_wants_usage:
                options = body.get("stream_options")
                body["stream_options"] = (
                    {**options, "include_usage": True}
                    if isinstance(options, dict)
                    else {"include_usage": True}
                )
            body["model"] = model
            self._payload = orjson.dumps(body)
            self._payload_model = model
        # Only the backend credential differs between attempts.
        authorization = target.backend.authorization
        self.headers = (
            self.base_headers
            if authorization is None
            else (*self.base_headers, ("Authorization", authorization))
        )

    def _fail(
        self,
        target: TargetEntry,
        reason: str,
        retry_reason: str | None,
        error: ProxyError,
        answer: web.Response | None = None,
        health: bool = True,
    ) -> AttemptFailed:
        target.metrics.count_error(reason)
        if health:
            self._record_health_failure(target)
        return AttemptFailed(reason, retry_reason, error, answer)

    def _record_health_failure(self, target: TargetEntry) -> None:
        backend = target.backend
        if backend.health.record_failure():
            seconds = backend.health.ejection_remaining()
            self.metrics.ejections.labels(backend.id).inc()
            self.metrics.ejected_until.labels(backend.id).set(time.time() + seconds)
            log.warning(
                "backend %s ejected for %.1fs after %d failures in a row",
                backend.id,
                seconds,
                backend.config.outlier_detection.consecutive_failures,
            )

    async def _attempt(self, target: TargetEntry) -> web.StreamResponse:
        backend = target.backend
        config = backend.config
        now = self.loop.time()
        limiter = backend.limiter
        unlimited = limiter.limit is None
        if unlimited:
            limiter.in_use += 1  # ConcurrencyLimiter.try_acquire without a limit, inlined
        elif not limiter.try_acquire() and not await limiter.acquire(
            config.queue_timeout if self.deadline is None else min(config.queue_timeout, self.deadline - now)
        ):
            raise self._fail(
                target,
                "overloaded",
                "overloaded",
                make_overloaded(f"Route {self.route.id}: backend {backend.id} is at its concurrency limit."),
                health=False,
            )
        reply: UpstreamReply | None = None
        try:
            timeouts = config.timeouts
            hard = now + timeouts.total if timeouts.total is not None else None
            if self.deadline is not None and (hard is None or self.deadline < hard):
                hard = self.deadline
            self._prepare_call(target)
            try:
                with AttemptWatchdog(timeouts.first_byte, hard, self.loop, self._task) as watchdog:
                    reply = await backend.provider.send(
                        self.client, self.kind, self.body, self._payload, self.headers
                    )
                    status = reply.status
                    if not self.stream:
                        # A JSON answer usually arrives with its headers: answered without
                        # another await (and so without re-arming the watchdog for `idle`).
                        body = reply.take_complete_body()
                        if body is not None:
                            return self._answer_document(target, status, reply.headers, body)
                    return await self._answer(target, reply, watchdog)
            except AttemptTimeout as timeout:
                if self._response is not None:
                    return await self._cut_stream(
                        target, "idle-timeout" if timeout.kind == "idle" else "total-timeout", 504
                    )
                if timeout.kind == "first-byte":
                    raise self._fail(
                        target,
                        "timeout",
                        "timeout",
                        make_upstream_timeout(
                            f"Route {self.route.id}: backend {backend.id} sent no answer within "
                            f"{timeouts.first_byte}s."
                        ),
                    ) from None
                if timeout.kind == "idle":
                    raise self._fail(
                        target,
                        "idle-timeout",
                        None,
                        make_upstream_timeout(
                            f"Route {self.route.id}: backend {backend.id} stalled for {timeouts.idle}s."
                        ),
                    ) from None
                raise self._fail(
                    target,
                    "total-timeout",
                    None,
                    make_upstream_timeout(
                        f"Route {self.route.id}: the request to backend {backend.id} ran out of time."
                    ),
                ) from None
            except ConnectFailure as exc:
                raise self._fail(
                    target,
                    "connect-failure",
                    "connect-failure",
                    make_upstream_unreachable(
                        f"Route {self.route.id}: could not connect to backend {backend.id} ({exc})."
                    ),
                ) from None
            except StreamDropped:
                if self._response is not None:
                    return await self._cut_stream(target, "disconnect", 502)
                raise self._fail(
                    target,
                    "disconnect",
                    None,
                    make_upstream_unreachable(
                        f"Route {self.route.id}: backend {backend.id} closed the connection mid-answer."
                    ),
                ) from None
        finally:
            try:
                if reply is not None:
                    closing = reply.close()
                    if closing is not None:
                        await closing
            finally:
                if unlimited:
                    limiter.in_use -= 1  # release: nobody waits for an unlimited backend
                else:
                    limiter.release()

    async def _answer(
        self, target: TargetEntry, reply: UpstreamReply, watchdog: AttemptWatchdog
    ) -> web.StreamResponse:
        status = reply.status
        reply_headers = reply.headers
        # The first-byte bound lasts until the first body bytes, not just the headers: a
        # streaming server sends its headers at once and its first token much later, and
        # nothing has gone to the client yet, so a timeout here can still be retried.
        first = await reply.read_chunk()
        idle = target.backend.config.timeouts.idle
        if (
            self.stream
            and 200 <= status < 300
            and "text/event-stream" in reply_headers.get("Content-Type", "")
        ):
            watchdog.start_body(idle)
            return await self._relay_stream(target, reply, watchdog, first, status, reply_headers)
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
                watchdog.paused = False  # watchdog.touch(), inlined
                watchdog.last = self.loop.time()
                if reply.at_eof():
                    break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._answer_document(target, status, reply_headers, body)

    def _answer_document(
        self,
        target: TargetEntry,
        status: int,
        reply_headers: Mapping[str, str],
        body: bytes,
    ) -> web.Response:
        """The answer to relay for a whole (non-streamed) upstream body, with its accounting;
        raises `AttemptFailed` when the answer should be retried elsewhere."""
        if status < 300:  # a success: the hot path, decided first
            answer = web.Response(
                status=status, body=body, headers=response_header_pairs(reply_headers, target.header_items)
            )
            target.backend.health.record_success()
            self._record(status, target.metrics, body)
            return answer
        # 3xx-5xx: relayed (a 5xx not in the OpenAI error shape wrapped in it), retried
        # elsewhere when retryable, counted against the backend's health when a 5xx
        backend = target.backend
        if status >= 500 and not is_openai_error(body):
            error = make_upstream_failed(
                status, f"Route {self.route.id}: backend {backend.id} answered {status}."
            )
            answer = web.Response(
                status=status,
                body=render_error_body(error.message, error.error_type, error.code),
                content_type="application/json",
                headers=target.headers,
            )
            answer.headers.update(error.headers)
        else:
            answer = web.Response(
                status=status, body=body, headers=response_header_pairs(reply_headers, target.header_items)
            )
        retry_reason = RETRYABLE_STATUSES.get(status)
        if retry_reason is not None:
            failed = self._fail(
                target,
                retry_reason,
                retry_reason,
                make_upstream_failed(
                    status, f"Route {self.route.id}: backend {backend.id} answered {status}."
                ),
                answer,
                health=status != 429,
            )
            if retry_reason in self.route.retry_on and self._remaining_plan().has_more():
                raise failed
            self._record(status, target.metrics)
            return answer
        if status >= 500:
            target.metrics.count_error("upstream-5xx")
            self._record_health_failure(target)
        else:
            backend.health.record_success()  # a 3xx/4xx is an answer: the backend works
        self._record(status, target.metrics)
        return answer

    async def _relay_stream(
        self,
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
        sse = SSEUsageFilter(strip_usage_chunk=not self.client_wants_usage)
        self._filter = sse
        first = True
        chunk = first_chunk
        loop = self.loop
        try:
            await response.prepare(self.request)
            self._response = response
            while chunk:
                out = sse.feed(chunk)
                if out:
                    if first:
                        first = False
                        target.metrics.ttft.observe(loop.time() - self.started)
                    watchdog.paused = True  # a slow client is not a stalled upstream
                    await response.write(out)
                    watchdog.paused = False  # watchdog.touch(), inlined
                    watchdog.last = loop.time()
                chunk = await reply.read_chunk()
            rest = sse.flush()
            if rest:
                await response.write(rest)
            await response.write_eof()
        except ConnectionError:
            self._record(CLIENT_CLOSED, target.metrics)  # client gone; leaving closes the upstream
            return response
        target.backend.health.record_success()
        usage = sse.usage
        self._record(
            status,
            target.metrics,
            (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None,
        )
        return response

    async def _cut_stream(self, target: TargetEntry, reason: str, code: int) -> web.StreamResponse:
        """The stream broke after its headers went out: end it with an OpenAI error event."""
        response = self._response
        assert response is not None
        if self._filter is not None:
            self._filter.discard_pending()
        target.metrics.count_error(reason)
        self._record_health_failure(target)
        self._record(code, target.metrics)
        message = (
            f"Route {self.route.id}: backend {target.backend.id} "
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
