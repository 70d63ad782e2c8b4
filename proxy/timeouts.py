"""One watchdog per upstream attempt that enforces first-byte, idle, total and route deadlines.

Why not `asyncio.timeout` per chunk: a streamed answer has hundreds of chunks, and arming and
cancelling a timer for each costs more than the relay itself. `AttemptWatchdog` keeps the time
of the last activity (`touch()` is one clock read) and one pending check; when the check runs it
looks whether there was activity since and, if so, schedules itself for the new expiry. So a
stream is cut after `idle` seconds without a chunk, never earlier, and a long healthy stream
costs one check per `idle` seconds.

Why a `TimerWheel` instead of a loop timer per attempt: even one `call_at` + `cancel` per
request is a measurable share of a proxied request (bench/RESULTS.md), and almost every
attempt ends long before its timeout. Checks are rounded up to the next `GRANULARITY` tick, and
all checks of one tick share one loop timer; adding or removing a watchdog is a set operation.
A timeout therefore fires at most `GRANULARITY` late and never early (as aiohttp's
`ceil_timeout` rounds up to coalesce its timers).

Phases: until `start_body()` the bound is `first_byte` from the start of the attempt (the
caller calls it once the first body bytes arrived, unless it will not await again under the
watchdog, when the timer cannot fire anyway); afterwards it is `idle` since the last `touch()`. A hard deadline
(`min(attempt start + total, route deadline)`) applies throughout.

It cancels the task like `asyncio.timeout` does and turns that cancellation into
`AttemptTimeout` on exit, while a cancellation from elsewhere (client disconnect) still
propagates as `CancelledError`.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType
from typing import Literal

TimeoutKind = Literal["first-byte", "idle", "total"]

_SLACK = 0.0005  # timers may fire this early; do not re-arm for less
GRANULARITY = 0.025  # seconds between the ticks that checks are rounded up to


class TimerWheel:
    """The pending watchdog checks of one event loop, grouped by tick (see module docstring)."""

    __slots__ = ("__weakref__", "_loop", "_ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ticks: dict[int, set[AttemptWatchdog]] = {}

    def add(self, watchdog: AttemptWatchdog, when: float) -> int:
        """Check `watchdog` at the first tick at or after loop time `when`; returns the tick."""
        tick = math.ceil(when / GRANULARITY)
        due = self._ticks.get(tick)
        if due is None:
            due = self._ticks[tick] = set()
            self._loop.call_at(tick * GRANULARITY, self._run, tick)
        due.add(watchdog)
        return tick

    def remove(self, watchdog: AttemptWatchdog, tick: int) -> None:
        due = self._ticks.get(tick)
        if due is not None:
            due.discard(watchdog)

    def pending(self) -> int:
        """Watchdog checks not run yet (for tests)."""
        return sum(len(due) for due in self._ticks.values())

    def _run(self, tick: int) -> None:
        due = self._ticks.pop(tick, None)
        if due:
            for watchdog in due:
                watchdog._on_timer()


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerWheel] = weakref.WeakKeyDictionary()
_last_wheel: TimerWheel | None = None


def wheel_for(loop: asyncio.AbstractEventLoop) -> TimerWheel:
    """The loop's wheel (created on first use; the last one used is found without a lookup)."""
    global _last_wheel
    wheel = _last_wheel
    if wheel is not None and wheel._loop is loop:
        return wheel
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = TimerWheel(loop)
    _last_wheel = wheel
    return wheel


class AttemptTimeout(Exception):
    def __init__(self, kind: TimeoutKind) -> None:
        super().__init__(kind)
        self.kind: TimeoutKind = kind


class AttemptWatchdog:
    """A sync context manager (entering it needs no coroutine) around one upstream attempt.

    The hot path reads and writes `last` and `paused` directly instead of calling `touch()`
    and `pause()`: a stream relays dozens of chunks and each method call costs more than the
    attribute writes it wraps.
    """

    __slots__ = (
        "_cancelling",
        "_deadline",
        "_expired",
        "_first_byte",
        "_idle",
        "_loop",
        "_phase",
        "_task",
        "_tick",
        "_wheel",
        "_when",
        "kind",
        "last",
        "paused",
    )

    def __init__(
        self,
        first_byte: float,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
        task: asyncio.Task[object] | None = None,
    ) -> None:
        """`deadline` is absolute loop time (or None); `first_byte` is relative to entry.
        `loop` and `task` default to the running ones (callers that know them pass them)."""
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._task = task
        self._first_byte = first_byte
        self._idle = first_byte
        self._deadline = deadline
        self._phase: TimeoutKind = "first-byte"
        self.last = 0.0
        self._wheel = wheel_for(self._loop)
        self._tick: int | None = None  # the wheel tick of the pending check
        self._when = 0.0
        self.paused = False
        self._expired = False
        self._cancelling = 0
        self.kind: TimeoutKind | None = None

    def __enter__(self) -> AttemptWatchdog:
        task = self._task
        if task is None:
            task = self._task = asyncio.current_task(self._loop)
            if task is None:
                raise RuntimeError("AttemptWatchdog must be used inside a task")
        self._cancelling = task.cancelling()
        loop = self._loop
        now = self.last = loop.time()
        soft = now + self._first_byte
        deadline = self._deadline
        when = self._when = soft if deadline is None or soft < deadline else deadline
        self._tick = self._wheel.add(self, when)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tick = self._tick
        if tick is not None:
            self._wheel.remove(self, tick)
            self._tick = None
        if (
            self._expired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise AttemptTimeout(self.kind or "total") from exc

    def start_body(self, idle: float) -> None:
        """The first body bytes arrived: from now on the bound is `idle` between chunks."""
        self._phase = "idle"
        self._idle = idle
        loop = self._loop
        now = self.last = loop.time()
        soft = now + idle
        deadline = self._deadline
        expiry = soft if deadline is None or soft < deadline else deadline
        if expiry < self._when:
            self._arm(expiry)

    def touch(self) -> None:
        self.paused = False
        self.last = self._loop.time()

    def pause(self) -> None:
        """Stop the idle clock (while writing to a slow client) until the next `touch()`."""
        self.paused = True

    def _expiry(self) -> float:
        soft = self.last + self._idle
        deadline = self._deadline
        return soft if deadline is None or soft < deadline else deadline

    def _arm(self, when: float) -> None:
        if self._tick is not None:
            self._wheel.remove(self, self._tick)
        self._when = when
        self._tick = self._wheel.add(self, when)

    def _on_timer(self) -> None:
        self._tick = None
        if self.paused:
            self.last = self._loop.time()
        expiry = self._expiry()
        if expiry - self._loop.time() > _SLACK:
            self._arm(expiry)
            return
        deadline = self._deadline
        hard = deadline is not None and deadline <= self.last + self._idle
        self.kind = "total" if hard else self._phase
        self._expired = True
        if self._task is not None:
            self._task.cancel()
