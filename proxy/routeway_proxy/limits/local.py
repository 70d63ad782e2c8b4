"""The store of one process: budgets in a dict, for a single `serve`/`proxy` process and tests.

Every store has the same coroutines (`LimitStore`): `reserve` runs `budget.decide` over
the demands' states and writes the result back in one step, `settle` applies charges, `peek`
reads the demands' budgets as they stand now and writes nothing. Here
no await happens between read and write, so the event loop is the lock; a threading lock
guards against the admin thread reading at the same moment.

Memory stays bounded by the subjects in use: entries whose budget is full again (nothing
taken) are the same as absent, and are dropped by a sweep whenever the dict has doubled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from routeway_proxy.limits.budget import (
    Charge,
    Decision,
    Demand,
    LimitKind,
    decide,
    peek,
    settle_state,
    used_at,
)

Clock = Callable[[], float]
"""Unix time in seconds (day limits follow the UTC calendar); tests pass a fake one."""


class StoreUnavailable(Exception):
    """A store could not decide: Redis down or slow, the shared table full.

    `maybe_applied`: the call may have taken effect although no answer came (a Redis call that
    timed out after it was sent); the caller then releases the reservation by its record."""

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class LimitStore(Protocol):
    """Where budgets live; every implementation reserves all-or-nothing and atomically.

    `keeps_records`: the store can be cut between doing a reservation and saying so (Redis: a
    timeout, a cancelled call), so each reservation carries a `record` id, and settlement and
    `release` act by it, at most once (`redis_store`). The local and shared stores decide in
    one uninterruptible step, so an answer always follows a reservation: they ignore records."""

    keeps_records: bool

    async def reserve(self, demands: Sequence[Demand], record: str = "") -> Decision: ...

    async def settle(self, charges: Sequence[Charge], record: str = "") -> None: ...

    async def release(self, demands: Sequence[Demand], record: str) -> None:
        """Undo the reservation `record` of `demands` if it was made (stores with records)."""
        ...

    async def peek(self, demands: Sequence[Demand]) -> Decision:
        """The demands' budgets refilled to now, reserving and writing nothing (`budget.peek`)."""
        ...

    async def close(self) -> None: ...


class LocalStore:
    """Budgets of this process only."""

    keeps_records = False

    def __init__(self, clock: Clock = time.time, sweep_at: int = 1024) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, LimitKind], tuple[float, float, int]] = {}
        self._sweep_at = sweep_at

    def reserve_now(self, demands: Sequence[Demand]) -> Decision:
        now = self._clock()
        entries = self._entries
        with self._lock:
            decision, new = decide(demands, self._states(demands), now)
            for demand, state in zip(demands, new, strict=True):
                entries[demand.key, demand.kind] = (state[0], state[1], demand.limit)
            if len(entries) >= self._sweep_at:
                self._sweep(now)
        return decision

    def settle_now(self, charges: Sequence[Charge]) -> None:
        now = self._clock()
        entries = self._entries
        with self._lock:
            for charge in charges:
                entry = entries.get((charge.key, charge.kind))
                state = (entry[0], entry[1]) if entry is not None else (0.0, 0.0)
                used, updated = settle_state(
                    charge.kind, charge.limit, state, charge.delta, now, charge.reserved_at
                )
                entries[charge.key, charge.kind] = (used, updated, charge.limit)

    def peek_now(self, demands: Sequence[Demand]) -> Decision:
        now = self._clock()
        with self._lock:
            states = self._states(demands)
        return peek(demands, states, now)

    def _states(self, demands: Sequence[Demand]) -> list[tuple[float, float]]:
        """(used, updated) of each demand's budget; a budget never used is (0, 0). Under the lock."""
        entries = self._entries
        states = []
        for demand in demands:
            entry = entries.get((demand.key, demand.kind))
            states.append((entry[0], entry[1]) if entry is not None else (0.0, 0.0))
        return states

    async def reserve(self, demands: Sequence[Demand], record: str = "") -> Decision:
        return self.reserve_now(demands)

    async def peek(self, demands: Sequence[Demand]) -> Decision:
        return self.peek_now(demands)

    async def settle(self, charges: Sequence[Charge], record: str = "") -> None:
        self.settle_now(charges)

    async def release(self, demands: Sequence[Demand], record: str) -> None:
        return None  # no records: a reservation here always got its answer

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        full = [
            key
            for key, (used, updated, limit) in self._entries.items()
            if used_at(key[1], limit, (used, updated), now) == 0.0
        ]
        for key in full:
            del self._entries[key]
        self._sweep_at = max(self._sweep_at, 2 * len(self._entries))
