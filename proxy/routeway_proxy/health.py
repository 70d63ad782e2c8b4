"""Passive health (outlier detection) and per-backend concurrency limits.

Why passive: the gateway already sees every answer a backend gives, so failures in a row are
the cheapest and most honest health signal; no probe traffic, no extra configuration.

`OutlierDetector` is a pure state machine over an injectable clock (tests move time by hand):
- `consecutive_failures` failures in a row eject the backend for `base_ejection` seconds;
- each further ejection doubles the time, up to `max_ejection`;
- the doubling is forgotten once the backend has stayed in service for `max_ejection`
  seconds after its last ejection, so a backend that recovered for good starts over;
- any success resets the failure count.
Whether an ejected backend still gets traffic (it does when every candidate is ejected) is the
router's decision, not this class's.

A hold (`hold(seconds)`) is the backend's own word, not a guess: it answered 429 or 503 with a
`Retry-After`, so it is out of rotation until then like an ejected backend, and, unlike one, is
never sent a request before then, not even when every candidate is out (`is_held`; the attempt
policy enforces it). A hold neither counts as an ejection nor changes the doubling: it is kept
in `held_until`, apart from `ejected_until`, so the doubling is forgotten `max_ejection` after
the last ejection however long a hold lasted, and failures of requests already in flight when
the hold began count towards an ejection as usual. The router reads `out_until`, the later of
the two, so telling "out of rotation" apart from "in service" stays one attribute read.

`ConcurrencyLimiter` bounds requests in flight to a backend with a FIFO wait of bounded length:
a freed slot is handed to the oldest waiter, so nobody starves while newcomers barge in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from routeway.proxyconfig import OutlierDetection

Clock = Callable[[], float]


class OutlierDetector:
    __slots__ = (
        "_clock",
        "_config",
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "held_status",
        "held_until",
        "level",
        "out_until",
    )

    def __init__(self, config: OutlierDetection, clock: Clock = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self.consecutive_failures = 0
        self.ejections = 0
        self.level = 0
        self.ejected_until: float | None = None  # the last ejection ends (holds never set it)
        self.held_until: float | None = None  # never called before (a hold: its Retry-After)
        self.out_until: float | None = None  # out of rotation until: the later of the two above
        self.held_status = 503  # the status that asked for the hold (429 or 503)

    def is_ejected(self) -> bool:
        """Out of rotation now: ejected, or held (the router treats both alike)."""
        until = self.out_until
        return until is not None and self._clock() < until

    def ejection_remaining(self) -> float:
        """Seconds until the backend is back in rotation (0 when it is)."""
        until = self.out_until
        return max(until - self._clock(), 0.0) if until is not None else 0.0

    def is_held(self) -> bool:
        """The backend asked not to be called before a time still ahead (`hold`)."""
        until = self.held_until
        return until is not None and self._clock() < until

    def held_remaining(self) -> float:
        """Seconds until the current hold ends (0 when not held)."""
        until = self.held_until
        return max(until - self._clock(), 0.0) if until is not None else 0.0

    def hold(self, seconds: float, status: int = 503) -> bool:
        """The backend said "come back in `seconds`" (a Retry-After, already bounded by the
        caller) with `status`: out of rotation and never called until then. True when this
        made the hold longer (a shorter one while a longer one runs changes nothing)."""
        if seconds <= 0:
            return False
        until = self._clock() + seconds
        held = self.held_until
        if held is not None and until <= held:
            return False
        self.held_until = until
        self.held_status = status
        out = self.out_until
        if out is None or out < until:
            self.out_until = until
        return True

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.ejected_until is not None:
            self._forget_old_ejections(self._clock())

    def record_failure(self) -> bool:
        """Count a failure; True when this failure ejected the backend."""
        now = self._clock()
        if self.ejected_until is not None and now < self.ejected_until:
            return False  # already out; failures while ejected do not extend it
        threshold = self._config.consecutive_failures
        if threshold <= 0:
            return False
        self.consecutive_failures += 1
        if self.consecutive_failures < threshold:
            return False
        self._forget_old_ejections(now)
        duration = min(self._config.base_ejection * (2**self.level), self._config.max_ejection)
        self.ejected_until = until = now + duration
        out = self.out_until
        if out is None or out < until:
            self.out_until = until
        self.level += 1
        self.ejections += 1
        self.consecutive_failures = 0
        return True

    def _forget_old_ejections(self, now: float) -> None:
        until = self.ejected_until
        if until is not None and now - until >= self._config.max_ejection:
            self.level = 0

    def describe(self) -> dict[str, Any]:
        """JSON-ready state for /routes."""
        now = self._clock()
        out = self.out_until
        ejected = out is not None and now < out
        return {
            "ejected": ejected,
            "ejectedForSeconds": round(out - now, 3) if out is not None and ejected else 0.0,
            "heldForSeconds": round(self.held_until - now, 3)
            if self.held_until is not None and now < self.held_until
            else 0.0,
            "consecutiveFailures": self.consecutive_failures,
            "ejections": self.ejections,
        }


class ConcurrencyLimiter:
    """At most `limit` holders (None: unlimited); `acquire` waits up to a timeout, FIFO."""

    __slots__ = ("_waiters", "in_use", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def try_acquire(self) -> bool:
        """Take a free slot without waiting (the hot path: no coroutine)."""
        if self.limit is None or (self.in_use < self.limit and not self._waiters):
            self.in_use += 1
            return True
        return False

    async def acquire(self, wait: float) -> bool:
        """Take a slot; False when none freed up within `wait` seconds."""
        if self.limit is None:
            self.in_use += 1
            return True
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        if wait <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    def release(self) -> None:
        """Give the slot back, or hand it straight to the oldest live waiter (unless a lowered
        limit is still exceeded: then the slot is gone)."""
        waiters = self._waiters
        limit = self.limit
        if limit is None or self.in_use <= limit:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # in_use unchanged: the slot changes hands
                    return
        self.in_use -= 1

    def resize(self, limit: int | None) -> None:
        """A reload changed the backend's `maxConcurrency`: the slots in use stay counted (so
        old and new requests together never exceed the new limit) and waiters get what a
        raised limit frees at once."""
        self.limit = limit
        waiters = self._waiters
        while waiters and (limit is None or self.in_use < limit):
            waiter = waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)
