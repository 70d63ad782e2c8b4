"""The attempt policy: what to do after each event of a request's attempts, without I/O.

In the manner of h11 or mitmproxy's layers, this module never touches a socket, a clock or a
timer: the driver (`attempts.py`) tells it what happened and it answers what to do next.

Events and answers:
- `first()` → the first target, or None when the route has none to send to
  (`nothing_to_try()` is then the answer);
- `failed(target, failure, now)` → `Retry(target, backoff)`: wait `backoff` seconds, then try
  `target`; or `GiveUp(failure)`: answer with the failure's upstream answer if it has one, else
  its error. Only failures before anything reached the client come here;
- a failure after the first byte reached the client (a stream) cannot be retried: the stream
  is cut, and `cut_status(reason)` says with which status it is accounted;
- connected, first byte, chunks and done change nothing here: the watchdog bounds their timing
  (`attempt_deadline` says until when), and success needs no decision.

Rules: a failure leads to another target only if its `retry_reason` is in the route's
`retryOn` (a backend with no free concurrency slot is always skipped to the next, without
backoff); the next target comes from the `CandidatePlan` (weighted picks, then fallbacks);
exponential backoff with equal jitter separates attempts; the route's `timeout` bounds
everything, backoff included (`GiveUp` with a route-timeout 504). When the last failure was a
502/504 and every candidate of the route is ejected, the answer is 503 with a Retry-After of
the earliest re-admission: the model is down, not one backend hiccuping.

Retry-After: an upstream answer that says when to come back (`parse_retry_after`, both forms,
bounded by `MAX_RETRY_AFTER`) puts its backend on hold (`OutlierDetector.hold`, done by the
driver as it reports the failure). A held backend is never tried again before then — not by
this request's retries, nor by any other request: the policy skips it and falls back or tries
another backend, and when nothing else can serve, the request is answered with the upstream's
own answer and its Retry-After (a request that finds every candidate held: 429 or 503 as the
backend said, with the time left). A failure after the headers but before anything reached
the client (a non-streamed answer that broke off or stalled, a stream that dropped before its
first event) is retried like the answer the gateway would give for it: `5xx`, `timeout`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from routeway_proxy.errors import ProxyError, make_overloaded, make_upstream_timeout
from routeway_proxy.pipeline.choose import CandidatePlan

if TYPE_CHECKING:
    from routeway_proxy.table import BackendEntry, RouteEntry, TargetEntry

OVERLOADED = "overloaded"
"""The retry reason of a backend without a free concurrency slot: always skipped to the next."""

RETRYABLE_STATUSES = {429: "429", 502: "5xx", 503: "5xx", 504: "5xx"}
"""Upstream statuses that may be retried elsewhere, and the `retryOn` value each counts as."""

MAX_RETRY_AFTER = 3600.0
"""The longest Retry-After honoured and passed on, in seconds: a larger one (a broken clock, a
date years ahead) is taken as this."""

_DELTA_SECONDS = re.compile(r"\s*\d+(?:\.\d+)?\s*")  # (a header is at most 8 KiB: float() is cheap)

CUT_STATUS = {"idle-timeout": 504, "total-timeout": 504, "disconnect": 502}
"""How a stream broken after its headers went out is accounted, by failure reason."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that failed before anything reached the client."""

    reason: str  # metric label, kebab-case like retryOn values (connect-failure, timeout, 5xx, ...)
    retry_reason: str | None  # the retryOn value it counts as, OVERLOADED, or None: never retried
    error: ProxyError  # what the client is told if this stays the last failure
    answer: object = None  # the upstream's own answer (an HTTP response), relayed instead of `error`
    retry_after: float | None = None  # the upstream's Retry-After, in seconds (bounded), if any


@dataclass(frozen=True, slots=True)
class Retry:
    target: TargetEntry
    backoff: float  # seconds to wait before the attempt


@dataclass(frozen=True, slots=True)
class GiveUp:
    failure: Failure  # the final answer: `failure.answer` if set, else `failure.error`


Decision = Retry | GiveUp


def compute_backoff(retry: int, base: float, cap: float, uniform: Callable[[float, float], float]) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    delay = min(cap, base * (2.0 ** max(retry - 1, 0)))
    return delay / 2 + uniform(0, delay / 2)


def attempt_deadline(now: float, total: float | None, route_deadline: float | None) -> float | None:
    """The hard end of an attempt started at `now`: its backend's `total`, or the route's
    deadline when that comes first."""
    hard = now + total if total is not None else None
    if route_deadline is not None and (hard is None or route_deadline < hard):
        return route_deadline
    return hard


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` value asks to wait, within [0, MAX_RETRY_AFTER]; None when
    absent or unreadable. Both forms of RFC 9110 §10.2.3: delta-seconds (a fraction, which
    some servers send, is rounded up) and an HTTP-date, read against `now` (unix time) — a
    date in the past means "now"."""
    if not value:
        return None
    delta = _DELTA_SECONDS.fullmatch(value)
    if delta is not None:
        seconds = float(delta.group(0))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322, and what HTTP-dates mean
            when = when.replace(tzinfo=UTC)
        try:
            seconds = when.timestamp() - now
        except (OverflowError, OSError, ValueError):
            return MAX_RETRY_AFTER
    if not seconds < MAX_RETRY_AFTER:  # also an infinity (400 nines)
        return MAX_RETRY_AFTER
    return max(float(math.ceil(seconds)), 0.0)


def cut_status(reason: str) -> int:
    return CUT_STATUS[reason]


class AttemptPolicy:
    """The attempts of one request at `route` (see the module docstring)."""

    __slots__ = ("_asked_to_wait", "_attempts", "_plan", "_uniform", "deadline", "route")

    def __init__(
        self,
        route: RouteEntry,
        sticky_key: str | None,
        deadline: float | None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.route = route
        self.deadline = deadline  # absolute loop time, from the route's `timeout`
        self._plan = CandidatePlan(route, sticky_key)
        self._attempts = 0
        self._uniform = uniform
        self._asked_to_wait: set[str] | None = None  # backends whose answer had a Retry-After

    def first(self) -> TargetEntry | None:
        self._attempts = 1
        target = self._plan.next()
        if target is not None and target.backend.health.out_until is not None:
            return self._skip_held(target)  # a hold puts it out of rotation: only then can one apply
        return target

    def failed(self, target: TargetEntry, failure: Failure, now: float) -> Decision:
        plan = self._plan
        plan.mark_failed(target)
        if failure.retry_after:  # it said when to come back: not again in this request, whatever
            waiting = self._asked_to_wait  # its status (a 429's or 503's also holds it for all)
            if waiting is None:
                waiting = self._asked_to_wait = set()
            waiting.add(target.backend.id)
        retry_reason = failure.retry_reason
        if retry_reason is None or (retry_reason != OVERLOADED and retry_reason not in self.route.retry_on):
            return self._give_up(failure)
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return self._give_up(self.route_timed_out())
        following = self._skip_held(plan.next())
        if following is None:
            return self._give_up(failure)
        backoff = 0.0
        if retry_reason != OVERLOADED:
            retries = self.route.config.retries
            backoff = compute_backoff(
                self._attempts, retries.backoff_base, retries.backoff_max, self._uniform
            )
            if deadline is not None and now + backoff >= deadline:
                return self._give_up(self.route_timed_out())
        self._attempts += 1
        return Retry(following, backoff)

    def nothing_to_try(self) -> ProxyError:
        held = [b.health for b in self._candidates() if b.health.is_held()]
        if not held:
            return make_overloaded(f"Route {self.route.id} has no backend to send to.")
        first = min(held, key=lambda health: health.held_remaining())
        status = first.held_status
        error = ProxyError(
            status,
            f"Every backend of route {self.route.id} asked to be called again later (Retry-After).",
            "upstream_rate_limited" if status == 429 else "backend_unavailable",
            "requests" if status == 429 else "server_error",
        )
        error.headers["Retry-After"] = str(max(1, math.ceil(first.held_remaining())))
        return error

    def _skip_held(self, target: TargetEntry | None) -> TargetEntry | None:
        """`target`, or the plan's next candidate that is not on hold and did not ask this
        request to wait (None: no such one)."""
        plan = self._plan
        waiting = self._asked_to_wait
        while target is not None and (
            target.backend.health.is_held() or (waiting is not None and target.backend.id in waiting)
        ):
            target = plan.next()
        return target

    def _candidates(self) -> list[BackendEntry]:
        route = self.route
        candidates = [t.backend for t in route.targets if t.target.weight > 0]
        candidates += [t.backend for t in route.fallbacks]
        return candidates

    def route_timed_out(self) -> Failure:
        return Failure(
            "total-timeout",
            None,
            make_upstream_timeout(f"Route {self.route.id} timed out after {self.route.config.timeout}s."),
        )

    def _give_up(self, failure: Failure) -> GiveUp:
        if failure.answer is None:
            down = self._all_down(failure.error)
            if down is not None:
                failure = Failure(failure.reason, None, down)
        return GiveUp(failure)

    def _all_down(self, error: ProxyError) -> ProxyError | None:
        """A 503 with Retry-After instead of a 502/504 when every candidate is ejected."""
        if error.status not in (502, 504):
            return None
        route = self.route
        candidates = self._candidates()
        if not candidates or not all(b.health.is_ejected() for b in candidates):
            return None
        wait = max(1, math.ceil(min(b.health.ejection_remaining() for b in candidates)))
        down = make_overloaded(
            f"Every backend of route {route.id} is ejected after repeated failures: {error.message}"
        )
        down.headers["Retry-After"] = str(wait)
        return down
