"""Attempts: the aiohttp driver of one routed request — it performs the I/O the attempt
policy (`policy.py`) decides on, and settles the request once at its end.

Per attempt: take a concurrency slot of the backend (or wait up to its `queueTimeout`),
send through its provider under one `AttemptWatchdog` (first-byte, idle, total and route
deadlines), and hand the reply to the relay (`relay.py`). A failure before anything reached
the client becomes a `Failure` for the policy (`failures.py` says which); one after (a
stream) cuts the stream. The request's accounting record is written in `run`'s `finally`,
whatever path it took.

Why one object per request: what an attempt may do depends on request-wide state (the
policy's candidates, whether the client already has headers, the route deadline), and the
accounting is decided once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from routeway_proxy.errors import ProxyError, make_overloaded, render_error_body
from routeway_proxy.headers import upstream_header_pairs
from routeway_proxy.ledger import UsageSource
from routeway_proxy.metrics import PairMetrics, ProxyMetrics
from routeway_proxy.pipeline import relay
from routeway_proxy.pipeline.authenticate import Caller
from routeway_proxy.pipeline.failures import AttemptFailed, connect_failed, dropped, fail, timed_out
from routeway_proxy.pipeline.policy import OVERLOADED, AttemptPolicy, Failure, GiveUp, attempt_deadline
from routeway_proxy.pipeline.settle import CLIENT_CLOSED, fill_cache, settle
from routeway_proxy.providers import ConnectFailure, EndpointKind, StreamDropped, UpstreamReply
from routeway_proxy.streaming import SSEUsageFilter
from routeway_proxy.table import RouteEntry, TargetEntry
from routeway_proxy.timeouts import AttemptTimeout, AttemptWatchdog
from routeway_proxy.upstream_client import UpstreamClient

if TYPE_CHECKING:
    from routeway_proxy.pipeline.cache import CacheTicket


class Exchange:
    """Answers one request already matched to `route`."""

    __slots__ = (
        "_aborted",
        "_outcome",
        "_payload",
        "_payload_model",
        "_task",
        "attempt_started",
        "base_headers",
        "body",
        "cache",
        "caller",
        "client",
        "client_wants_usage",
        "headers",
        "kind",
        "limit_headers",
        "loop",
        "metrics",
        "policy",
        "request",
        "response",
        "route",
        "sse",
        "started",
        "stream",
        "target",
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
        loop: asyncio.AbstractEventLoop,
        sticky_key: str | None,
        caller: Caller,
        cache: CacheTicket | None = None,
    ) -> None:
        self.request = request
        self.caller = caller  # who is calling (pipeline.authenticate): labels the accounting record
        self.cache = cache  # on a route with a response cache: the request's part in it
        self.client = client
        self.metrics = metrics
        self.route = route
        self.kind = kind
        self.body = body
        self.started = started
        self.loop = loop
        stream = self.stream = kind != "embeddings" and body.get("stream") is True
        if stream:
            options = body.get("stream_options")
            self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        else:
            self.client_wants_usage = False
        timeout = route.timeout
        self.policy = AttemptPolicy(route, sticky_key, started + timeout if timeout else None)
        # tuples: every attempt shares the base, so none can change what another sends
        self.base_headers: tuple[tuple[str, str], ...] = tuple(
            upstream_header_pairs(request.headers, client_address=request.remote, scheme=request.scheme)
        )
        self.headers = self.base_headers  # the current attempt's: with its credential
        self._payload_model: str | None = None  # the model `_payload` was serialised for
        self._payload = b""
        self.target: TargetEntry | None = None  # the target of the current (or last) attempt
        self.attempt_started = started  # loop time the current attempt began (its latency's start)
        self.response: web.StreamResponse | None = None  # a streamed answer whose headers went out
        self.sse: SSEUsageFilter | None = None  # that stream's usage filter
        self._outcome: tuple[int, PairMetrics, UsageSource] | None = None  # the accounting record's
        self._aborted = False
        self._task: asyncio.Task[Any] | None = None
        self.limit_headers: dict[str, str] | None = None  # x-ratelimit-* of a limited request

    @property
    def outcome(self) -> tuple[int, PairMetrics, UsageSource] | None:
        """(status, metrics pair, usage) once concluded: what the limit stage settles from."""
        return self._outcome

    # ------------------------------------------------------------------ state, by its owner

    def conclude(self, code: int, pair: PairMetrics, usage: UsageSource = None) -> None:
        """The request's final status, the metrics pair it counts for and its usage. The first
        conclusion stands: what happens after it (a drain's abort while a cut stream's error
        event is still being written, a client leaving during the upstream's close) does not
        change what the request was."""
        if self._outcome is None:
            self._outcome = (code, pair, usage)

    def commit(self, response: web.StreamResponse, sse: SSEUsageFilter) -> None:
        """The stream's headers went to the client: from now on it can only be cut."""
        self.response = response
        self.sse = sse

    def abort(self) -> None:
        """End this request now with a "shutting down" answer (a stream: an error event), as a
        drain's grace period ends; the backend is not blamed for it."""
        task = self._task
        if task is not None and not task.done() and not self._aborted:
            self._aborted = True
            task.cancel()

    # ------------------------------------------------------------------ the request

    async def run(self) -> web.StreamResponse:
        route = self.route
        in_flight = route.in_flight
        in_flight.inc(1)
        self._task = asyncio.current_task(self.loop)
        try:
            try:
                # the attempts, as the policy decides them (inline, not a coroutine of its own:
                # every await level is a frame and a resume more on each request)
                policy = self.policy
                target = policy.first()
                if target is None:
                    raise self._final_error(policy.nothing_to_try())
                while True:
                    self.target = target
                    try:
                        return await self._attempt(target)
                    except AttemptFailed as failed:
                        failure = failed.failure
                        decision = policy.failed(target, failure, self.loop.time())
                        if isinstance(decision, GiveUp):
                            return self._answer_failure(decision.failure)
                        target.metrics.count_retry(failure.reason)
                        target = decision.target
                        if decision.backoff:
                            await asyncio.sleep(decision.backoff)
            except ProxyError as error:
                self.conclude(error.status, self._pair())
                raise
            except asyncio.CancelledError:
                task = self._task
                if self._aborted and task is not None and task.uncancel() == 0:
                    return await self._answer_shutdown()  # our own cancellation, and only ours
                self.conclude(CLIENT_CLOSED, self._pair())  # the client went away
                raise
            except Exception:
                self.conclude(500, self._pair())  # a bug or an unforeseen library error: a 500
                raise
        finally:
            in_flight.inc(-1)
            outcome = self._outcome
            if outcome is not None:
                code, pair, usage = outcome
                metrics = self.metrics
                seconds = self.loop.time() - self.started
                if metrics.access is not None:  # --access-log: the request's line
                    cache = self.cache
                    usage = metrics.access.write(
                        self.request,
                        self.route,
                        pair,
                        code,
                        seconds,
                        usage,
                        self.caller,
                        cache.result if cache is not None else None,
                    )
                settle(metrics.ledger, pair, code, seconds, usage, self.caller)
                if self.cache is not None and code == 200:
                    fill_cache(self.cache)

    def _pair(self) -> PairMetrics:
        target = self.target
        return target.metrics if target is not None else self.route.metrics

    def _final_error(self, error: ProxyError) -> ProxyError:
        target = self.target
        error.headers.update(target.headers if target is not None else self.route.headers)
        return error

    def _answer_failure(self, failure: Failure) -> web.StreamResponse:
        answer = failure.answer
        if isinstance(answer, web.StreamResponse):
            self.conclude(answer.status, self._pair())
            return answer
        raise self._final_error(failure.error)

    async def _answer_shutdown(self) -> web.StreamResponse:
        message = "The gateway is shutting down; send the request again."
        self.conclude(503, self._pair())
        response = self.response
        if response is None:
            target = self.target
            headers = {**(target.headers if target is not None else self.route.headers), "Retry-After": "1"}
            raise ProxyError(503, message, "gateway_shutting_down", "server_error", headers=headers)
        if self.sse is not None:
            self.sse.discard_pending()
        event = b"data: " + render_error_body(message, "server_error", "gateway_shutting_down") + b"\n\n"
        # RuntimeError: the stream had just ended (write after write_eof) when the abort came
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(event)
            await response.write_eof()
        return response

    # ------------------------------------------------------------------ one attempt

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

    async def _attempt(self, target: TargetEntry) -> web.StreamResponse:
        backend = target.backend
        config = backend.config
        now = self.attempt_started = self.loop.time()
        limiter = backend.limiter
        deadline = self.policy.deadline
        if not limiter.try_acquire() and not await limiter.acquire(
            config.queue_timeout if deadline is None else min(config.queue_timeout, deadline - now)
        ):
            raise fail(
                self,
                target,
                "overloaded",
                OVERLOADED,
                make_overloaded(f"Route {self.route.id}: backend {backend.id} is at its concurrency limit."),
                health=False,
            )
        reply: UpstreamReply | None = None
        try:
            timeouts = config.timeouts
            self._prepare_call(target)
            try:
                with AttemptWatchdog(
                    timeouts.first_byte,
                    attempt_deadline(now, timeouts.total, deadline),
                    self.loop,
                    self._task,
                ) as watchdog:
                    reply = await backend.provider.send(
                        self.client, self.kind, self.body, self._payload, self.headers
                    )
                    if not self.stream:
                        # A JSON answer usually arrives with its headers: answered without
                        # another await (and so without re-arming the watchdog for `idle`).
                        body = reply.take_complete_body()
                        if body is not None:
                            return relay.answer_document(self, target, reply.status, reply.headers, body)
                    return await relay.answer(self, target, reply, watchdog)
            except AttemptTimeout as timeout:
                if self.response is not None:
                    reason = "idle-timeout" if timeout.kind == "idle" else "total-timeout"
                    return await relay.cut_stream(self, target, reason)
                raise timed_out(self, target, timeout) from None
            except ConnectFailure as exc:
                raise connect_failed(self, target, str(exc)) from None
            except StreamDropped:
                if self.response is not None:
                    return await relay.cut_stream(self, target, "disconnect")
                raise dropped(self, target) from None
        finally:
            try:
                if reply is not None:
                    closing = reply.close()
                    if closing is not None:
                        await closing
            finally:
                limiter.release()
