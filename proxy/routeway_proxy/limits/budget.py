"""The limit algorithm: budgets that are reserved before a request and settled after it.

Pure: every function takes the time (`now`, unix seconds) and the stored state, and returns
the new state; the stores (`local`, `shared`, `redis_store`) only keep states and run these
functions under their lock (Redis runs the same rules as Lua, `redis_store`).

Why reserve-then-settle: a request's token count is known only when it ends. Counting after
the fact lets a burst of concurrent requests all pass a check made before any of them
finished; reserving the estimate first (`estimate.py`) makes the check and the charge one
atomic step, so 20 concurrent reservations of 1,000 tokens against 5,000 tokens per minute
admit 5. Settling replaces the reservation by the real usage: the unused part comes back, and
an underestimate is charged as debt (the budget may go below zero and then refills from there).

Window semantics, chosen for OpenAI compatibility and documented in the README of issue 13:

- Per minute (`requestsPerMinute`, `tokensPerMinute`): a token bucket whose capacity is the
  limit and which refills continuously at limit/60 per second. A full bucket admits a burst
  of the whole limit at once; after that the rate is the limit per minute. `reset` is the time
  until the bucket is full again, which is what OpenAI's `x-ratelimit-reset-*` mean.
- Per day (`tokensPerDay`): a fixed UTC calendar day (00:00 to 24:00 UTC; unix time has no
  leap seconds, so day = floor(now / 86400)). A quota is what people budget by the day, and the
  ModelClient's status reports "the current day"; the price is a possible double spend across
  midnight, acceptable for a daily quota. `reset` is the time to the next UTC midnight.

The records (`Demand`, `Budget`, `Decision`, `Charge`) are NamedTuples: immutable like frozen
dataclasses, but built without an `object.__setattr__` per field — a limited request makes
about a dozen of them.

State per (key, kind) is `(used, updated)`: how much of the budget is taken and when that was
last written; `(0, 0)` is a fresh, full budget, so stores need no initialisation. A clock that
steps back refills nothing (the newest `updated` is kept).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

MINUTE = 60.0
DAY = 86400.0

State = tuple[float, float]
"""(used, updated): budget taken (may exceed the limit after an underestimate) and its time."""

FRESH: State = (0.0, 0.0)


class LimitKind(enum.IntEnum):
    """The limits of issue 13; the value is stored in the shared table and sent to Redis."""

    REQUESTS_PER_MINUTE = 1
    TOKENS_PER_MINUTE = 2
    TOKENS_PER_DAY = 3

    @property
    def field(self) -> str:
        """The spec field and metric label: `requestsPerMinute`, ..."""
        return _FIELDS[self]

    @property
    def counts_tokens(self) -> bool:
        return self is not LimitKind.REQUESTS_PER_MINUTE


_FIELDS = {
    LimitKind.REQUESTS_PER_MINUTE: "requestsPerMinute",
    LimitKind.TOKENS_PER_MINUTE: "tokensPerMinute",
    LimitKind.TOKENS_PER_DAY: "tokensPerDay",
}


class Demand(NamedTuple):
    """Reserve `amount` (1 request, or estimated tokens) of `key`'s budget of `kind`, `limit`
    large. `key` names the subject: `client:default/search-team`, `route:default/chat`."""

    key: str
    kind: LimitKind
    limit: int
    amount: int


class Budget(NamedTuple):
    """One limit as it stands after a decision: what the `x-ratelimit-*` headers report."""

    key: str
    kind: LimitKind
    limit: int
    remaining: int
    reset: float  # seconds until the budget is full again


class Decision(NamedTuple):
    """Admitted (every demand reserved) or rejected (none reserved), with the budgets after it.

    Rejected: `failed` is the demand that waits longest, `retry_after` the seconds until every
    demand would fit, `too_large` when some demand exceeds its whole limit and never fits."""

    admitted: bool
    budgets: tuple[Budget, ...]
    at: float  # the time of the decision (the store's clock): a settlement needs it
    failed: Demand | None = None
    retry_after: float = 0.0
    too_large: bool = False


def day_of(now: float) -> int:
    return math.floor(now / DAY)


def used_at(kind: LimitKind, limit: int, state: State, now: float) -> float:
    """What is taken of the budget at `now`: refilled since `updated`, or a new day's zero."""
    used, updated = state
    if used == 0.0:
        return 0.0
    if kind is LimitKind.TOKENS_PER_DAY:
        return used if day_of(updated) >= day_of(now) else 0.0
    elapsed = now - updated
    if elapsed <= 0.0:
        return used
    return max(0.0, used - elapsed * limit / MINUTE)


def reset_after(kind: LimitKind, limit: int, used: float, now: float) -> float:
    """Seconds until nothing is taken, the budget full again (OpenAI's reset)."""
    if used <= 0.0:
        return 0.0
    if kind is LimitKind.TOKENS_PER_DAY:
        return (day_of(now) + 1) * DAY - now
    return used * MINUTE / limit if limit > 0 else math.inf


def wait_for(kind: LimitKind, limit: int, used: float, amount: int, now: float) -> float:
    """Seconds until `amount` more fits under `limit` (0: it fits now; inf: never). Nothing
    (a cache hit's tokens) always fits, even into a budget in debt."""
    if amount <= 0:
        return 0.0
    if amount > limit:
        return math.inf
    excess = used + amount - limit
    if excess <= 0.0:
        return 0.0
    if kind is LimitKind.TOKENS_PER_DAY:
        return (day_of(now) + 1) * DAY - now
    return excess * MINUTE / limit


def budget_of(demand: Demand, used: float, now: float) -> Budget:
    remaining = max(0, math.floor(demand.limit - used + 1e-9))
    return Budget(
        demand.key, demand.kind, demand.limit, remaining, reset_after(demand.kind, demand.limit, used, now)
    )


def decide(demands: Sequence[Demand], states: Sequence[State], now: float) -> tuple[Decision, list[State]]:
    """Reserve every demand or none. Returns the decision and the states to store (the
    refilled states when rejected: writing them back is harmless, and keeps `updated` fresh).
    One pass over the demands (every limited request runs this): the use at `now` and the
    wait of each, the first longest wait kept."""
    used: list[float] = []
    longest = -1
    longest_wait = 0.0
    for index, (demand, state) in enumerate(zip(demands, states, strict=True)):
        use = used_at(demand.kind, demand.limit, state, now)
        used.append(use)
        wait = wait_for(demand.kind, demand.limit, use, demand.amount, now)
        if wait > longest_wait:
            longest, longest_wait = index, wait
    if longest >= 0:
        budgets = tuple(budget_of(d, u, now) for d, u in zip(demands, used, strict=True))
        too_large = math.isinf(longest_wait)
        failed = demands[longest]
        retry = reset_after(failed.kind, failed.limit, used[longest], now) if too_large else longest_wait
        new = [(u, max(now, s[1])) for u, s in zip(used, states, strict=True)]
        return Decision(False, budgets, now, failed, retry, too_large), new
    budgets_after = []
    new_states = []
    for demand, use, state in zip(demands, used, states, strict=True):
        after = use + demand.amount
        budgets_after.append(budget_of(demand, after, now))
        new_states.append((after, now if now > state[1] else state[1]))
    return Decision(True, tuple(budgets_after), now), new_states


def peek(demands: Sequence[Demand], states: Sequence[State], now: float) -> Decision:
    """The budgets as they stand at `now` (refilled, never charged): what a request refused
    before the limit stage reports. The demands' amounts are ignored; the states are not
    changed, so a store writes nothing back."""
    budgets = tuple(
        budget_of(d, used_at(d.kind, d.limit, s, now), now) for d, s in zip(demands, states, strict=True)
    )
    return Decision(True, budgets, now)


def settle_state(
    kind: LimitKind, limit: int, state: State, delta: float, now: float, reserved_at: float
) -> State:
    """Replace a reservation made at `reserved_at` by the real use: `delta` = used - reserved
    (negative: a refund).

    A refund never takes `used` below zero: the budget never holds more than its limit. A
    per-minute refund goes back into the bucket as it stands now; when a request outlived the
    refill of its bucket, part of what it returns was refilled already, so a bucket can admit
    up to that unused part more within that minute (an estimate that is rarely far above the
    use keeps this small; holding reservations apart from the bucket instead would leak them
    whenever a process dies mid-request). A reservation of an earlier UTC day refunds nothing
    (yesterday's budget is gone) and its extra use is charged to today."""
    if kind is LimitKind.TOKENS_PER_DAY and delta < 0 and day_of(reserved_at) < day_of(now):
        delta = 0.0
    used = used_at(kind, limit, state, now)
    return (max(0.0, used + delta), max(now, state[1]))


class Charge(NamedTuple):
    """Settle `key`'s budget of `kind`: `delta` = real use - reservation (negative refunds)."""

    key: str
    kind: LimitKind
    limit: int
    delta: float
    reserved_at: float  # `Decision.at` of the reservation
