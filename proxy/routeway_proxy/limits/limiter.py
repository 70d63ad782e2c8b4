"""What the request path calls: reserve a request's budgets, settle them from its usage.

Wiring (done by `pipeline/limit.py`, with the store chosen by `wiring.py`):

    subjects = [Subject("client", client.name, client.limits), Subject("route", route.id, route.limits)]
    admission = await limiter.reserve(subjects, estimate_tokens(body, route.default_max_tokens))
    if not admission.admitted:
        raise rejection_error(admission)          # 429, or 503 when failing closed
    ... answer, with admission.headers added ...
    await limiter.settle(admission.ticket, used_tokens)  # prompt + completion; None: unknown

A request refused before the limit stage (a bad body, 413, 403, 404) of a limited client gets
`limiter.peek(subjects)`: the headers of its budgets as they stand, nothing reserved.

Per pod or per gateway: the store decides how far a budget is shared — `LocalStore` (one
process), `SharedStore` (one process group), `RedisStore` (every pod of a gateway). Without
Redis a gateway's pods share nothing, so each enforces its share: `limit // replicas` (at
least 1), with `replicas` the gateway's pod count, passed in by the wiring. A gateway whose
traffic is spread unevenly over its pods then reaches less than its limit; that is the price of
no shared store, and the reason to configure Redis.

Settlement: `used_tokens` replaces the reservation (unused tokens return, extra ones are
charged); `None` (usage unknown: a stream cut before its usage event, an upstream that sent
none) keeps the reservation as the charge; a request answered with no tokens spent (an
upstream error before any output) settles with 0. Requests are never refunded: a request
counts when it is admitted, whatever its outcome (a cache hit included).

When the store cannot decide (`StoreUnavailable`: Redis down or slower than its timeout, the
shared table full), the failure mode decides: `FailOpen` admits without limits (the gateway
keeps serving; the default), `FailClosed` refuses with 503 (a budget must never be exceeded).
Each failure counts in `routeway_ratelimit_store_failures_total{store, outcome}`, and is logged
at most once per `LOG_INTERVAL` seconds with the number of failures since the last line.
Proposed gateway field: `spec.limits.onRedisFailure: FailOpen | FailClosed`.

Uncertain reservations (a store that `keeps_records`: Redis). A reserve call that timed out
may have run on the server, and one whose request was cancelled while it waited may run
anyway; either way no one would settle what it reserved. So every reservation there carries a
record id (unique per limiter and request), and the store settles and releases by it at most
once, in any order with the reservation itself (`redis_store`). After such a failure:

- refused (FailClosed) or cancelled: the reservation is released by its record in the
  background, retried after `RELEASE_DELAYS` while the store keeps failing (a release is
  idempotent, unlike a reserve); a release that never gets through is counted `unreleased`
  (the reservation then stands as a charge, and a per-minute one refills within its minute);
- admitted (FailOpen): the request carries a ticket of the uncertain record and settles it like
  any other, so if the reservation did happen its charge becomes the real use.

A settlement by record that fails (counted `unsettled` at once) is retried the same way: it
too acts at most once, so a Redis slow for a moment no longer loses a request's real use.

Background retries are bounded (`MAX_PENDING`); `drain` waits for them at shutdown.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from routeway_proxy.limits.budget import Budget, Charge, Decision, Demand, LimitKind
from routeway_proxy.limits.headers import ratelimit_headers
from routeway_proxy.limits.local import LimitStore, StoreUnavailable
from routeway_proxy.limits.metrics import LimitMetrics

log = logging.getLogger("routeway.proxy.limits")

LOG_INTERVAL = 10.0
RELEASE_DELAYS = (0.1, 0.5, 2.0, 8.0)
"""Seconds before each retry of a release that failed (after the first attempt)."""
DRAIN_SECONDS = 5.0
"""How long shutdown waits for background releases."""
MAX_PENDING = 4096
"""Background releases at once; more (a store failing under a flood) are counted `unreleased`."""


class FailureMode(enum.Enum):
    """`spec.limits.onRedisFailure`."""

    FAIL_OPEN = "FailOpen"
    FAIL_CLOSED = "FailClosed"


class Limits(NamedTuple):
    """A client's or route's limits, as in the spec; None: no such limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None

    def items(self) -> list[tuple[LimitKind, int]]:
        """The limits that are set, in `LimitKind` order (every limited request reads them)."""
        return [(kind, value) for kind, value in zip(_KINDS, self, strict=True) if value is not None]

    def any(self) -> bool:
        """Whether any limit is set."""
        return self != _NO_LIMITS


_KINDS = (LimitKind.REQUESTS_PER_MINUTE, LimitKind.TOKENS_PER_MINUTE, LimitKind.TOKENS_PER_DAY)
"""`Limits`' fields in order, as kinds."""
_NO_LIMITS = Limits()


class Subject(NamedTuple):
    """Whose budgets: `scope` is "client" or "route", `name` its `namespace/name`."""

    scope: str
    name: str
    limits: Limits

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}"


class Ticket(NamedTuple):
    """What a reservation holds, to settle it: the token budgets and the tokens reserved."""

    budgets: tuple[tuple[str, LimitKind, int], ...]
    reserved: int
    at: float  # when it was reserved (the store's clock; 0 when unknown: the record knows)
    record: str = ""  # the reservation's id in a store that keeps records, else ""


class Admission(NamedTuple):
    """The limit stage's answer. `decision` is None when the store failed (see `unavailable`)."""

    admitted: bool
    decision: Decision | None
    ticket: Ticket | None
    headers: dict[str, str]
    unavailable: bool = False
    client: str = ""
    route: str = ""


def pod_share(limit: int, replicas: int) -> int:
    """A pod's part of a gateway-wide limit when its pods share no store."""
    return max(1, limit // max(1, replicas))


def make_demands(subjects: Sequence[Subject], tokens: int, replicas: int = 1) -> list[Demand]:
    demands = []
    for subject in subjects:
        key = subject.key
        for kind, limit in subject.limits.items():
            amount = 1 if kind is LimitKind.REQUESTS_PER_MINUTE else tokens
            demands.append(Demand(key, kind, limit if replicas == 1 else pod_share(limit, replicas), amount))
    return demands


class Limiter:
    """Reserves and settles budgets in `store`, and applies the failure mode."""

    def __init__(
        self,
        store: LimitStore,
        store_name: str,
        *,
        replicas: int = 1,
        on_failure: FailureMode = FailureMode.FAIL_OPEN,
        metrics: LimitMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        release_delays: Sequence[float] = RELEASE_DELAYS,
    ) -> None:
        self.store = store
        self.store_name = store_name  # the `store` label: "local", "shared", "redis"
        self.replicas = replicas
        self.on_failure = on_failure
        self.metrics = metrics
        self._monotonic = monotonic
        self._logged_at: float | None = None
        self._unlogged = 0
        self._release_delays = tuple(release_delays)
        # (budget key, kind) -> the bound `set` of its remaining gauge; one per subject in use,
        # and a limiter lives as long as its config's limits settings
        self._remaining: dict[tuple[str, LimitKind], Callable[[float], None]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        # record ids: random per limiter (so pods and restarts never collide), then a count
        self._record_prefix = os.urandom(8).hex() + "-"
        self._records = itertools.count()

    async def reserve(self, subjects: Sequence[Subject], tokens: int) -> Admission:
        """Reserve 1 request and `tokens` in every limit of every subject, or nothing."""
        client = next((s.name for s in subjects if s.scope == "client"), "")
        route = next((s.name for s in subjects if s.scope == "route"), "")
        demands = make_demands(subjects, tokens, self.replicas)
        if not demands:
            return Admission(True, None, None, {}, client=client, route=route)
        record = f"{self._record_prefix}{next(self._records)}" if self.store.keeps_records else ""
        try:
            decision = await self.store.reserve(demands, record)
        except StoreUnavailable as exc:
            admitted = self.on_failure is FailureMode.FAIL_OPEN
            self._failed(exc, "admitted" if admitted else "rejected")
            ticket = None
            if record and exc.maybe_applied:
                if admitted:  # settled by its record like any other: exactly once if it happened
                    ticket = Ticket(_token_budgets(demands), tokens, 0.0, record)
                else:
                    self.release_later(demands, record)
            return Admission(admitted, None, ticket, {}, unavailable=True, client=client, route=route)
        except asyncio.CancelledError:
            if record:  # the call may still run on the server: nobody would settle it
                self.release_later(demands, record)
            raise
        self._observe(decision, client, route)
        ticket = None
        if decision.admitted:
            ticket = Ticket(_token_budgets(demands), tokens, decision.at, record)
        return Admission(
            decision.admitted, decision, ticket, ratelimit_headers(decision), client=client, route=route
        )

    async def peek(self, subjects: Sequence[Subject]) -> dict[str, str]:
        """The `x-ratelimit-*` headers of `subjects`' budgets as they stand now, reserving
        nothing and writing nothing; {} when they have no limits or the store failed (counted
        as outcome `unread`: an answer without headers, never an error)."""
        demands = make_demands(subjects, 0, self.replicas)
        if not demands:
            return {}
        try:
            decision = await self.store.peek(demands)
        except StoreUnavailable as exc:
            self._failed(exc, "unread")
            return {}
        return ratelimit_headers(decision)

    async def settle(self, ticket: Ticket | None, used_tokens: int | None) -> None:
        """Replace the reservation by `used_tokens` (None: keep the reservation as the charge).
        A ticket with a record always reaches the store, which then forgets the record."""
        if ticket is None:
            return
        if not ticket.record and (
            used_tokens is None or used_tokens == ticket.reserved or not ticket.budgets
        ):
            return
        delta = 0.0 if used_tokens is None else float(used_tokens - ticket.reserved)
        charges = [Charge(key, kind, limit, delta, ticket.at) for key, kind, limit in ticket.budgets]
        try:
            await self.store.settle(charges, ticket.record)
        except StoreUnavailable as exc:
            self._failed(exc, "unsettled")
            if ticket.record:  # acts at most once by its record: safe to send again
                record = ticket.record
                self._retry_later(lambda: self.store.settle(charges, record), "unsettled", counted=True)

    def release_later(self, demands: Sequence[Demand], record: str) -> None:
        """Release `record`'s reservation of `demands` in the background, retried while the
        store fails (see the module docstring)."""
        self._retry_later(lambda: self.store.release(demands, record), "unreleased")

    def _retry_later(
        self, call: Callable[[], Awaitable[None]], outcome: str, *, counted: bool = False
    ) -> None:
        """Run `call` (idempotent: by a record) in the background until it gets through,
        after `RELEASE_DELAYS`; a last failure counts as `outcome` unless `counted` already."""
        if len(self._pending) >= MAX_PENDING:
            if not counted:
                self._failed(StoreUnavailable("too many retries pending"), outcome)
            return
        task = asyncio.get_running_loop().create_task(self._retry(call, outcome, counted))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _retry(self, call: Callable[[], Awaitable[None]], outcome: str, counted: bool) -> None:
        delays = self._release_delays if counted else (0.0, *self._release_delays)
        for index, delay in enumerate(delays):
            if delay:
                await asyncio.sleep(delay)
            try:
                await call()
                return
            except StoreUnavailable as exc:
                if index == len(delays) - 1 and not counted:
                    self._failed(exc, outcome)

    async def drain(self) -> None:
        """Wait up to `DRAIN_SECONDS` for background releases (at shutdown; the rest are
        cancelled and stand as charged)."""
        pending = set(self._pending)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()

    def _observe(self, decision: Decision, client: str, route: str) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        if not decision.admitted and decision.failed is not None:
            metrics.rejections.labels(client, route, decision.failed.kind.field).inc()
        setters = self._remaining
        for budget in decision.budgets:
            setter = setters.get((budget.key, budget.kind))
            if setter is None:  # a `labels()` lookup costs a lock and a tuple per call: bind once
                setter = metrics.remaining.labels(*_owner(budget), budget.kind.field).set
                setters[budget.key, budget.kind] = setter
            setter(budget.remaining)

    def _failed(self, exc: StoreUnavailable, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.store_failures.labels(self.store_name, outcome).inc()
        now = self._monotonic()
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
            log.warning(
                "limits store %s failed (%s): %s; %d failure(s) since the last report",
                self.store_name,
                exc,
                _CONSEQUENCES[outcome],
                self._unlogged,
            )
            self._logged_at = now
            self._unlogged = 0


_CONSEQUENCES = {
    "admitted": "admitting (FailOpen)",
    "rejected": "refusing (FailClosed)",
    "unsettled": "reservation kept as charged",
    "unreleased": "an uncertain reservation kept as charged",
    "unread": "answering without rate-limit headers",
}


def _token_budgets(demands: Sequence[Demand]) -> tuple[tuple[str, LimitKind, int], ...]:
    rpm = LimitKind.REQUESTS_PER_MINUTE
    return tuple([(d.key, d.kind, d.limit) for d in demands if d.kind is not rpm])


def _owner(budget: Budget) -> tuple[str, str]:
    scope, _, name = budget.key.partition(":")
    return (name, "") if scope == "client" else ("", name)
