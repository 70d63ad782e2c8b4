"""One timer per upstream attempt that enforces first-byte, idle, total and route deadlines.

Why not `asyncio.timeout` per chunk: a streamed answer has hundreds of chunks, and arming and
cancelling a timer for each costs more than the relay itself. `AttemptWatchdog` keeps the time
of the last activity (`touch()` is one clock read) and a single timer; when the timer fires it
checks whether there was activity since and, if so, re-arms for the new expiry. So the idle
bound is exact (a stream is cut after `idle` seconds without a chunk, never earlier) and a
long healthy stream costs one timer per `idle` seconds.

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
from types import TracebackType
from typing import Literal

TimeoutKind = Literal["first-byte", "idle", "total"]

_SLACK = 0.0005  # timers may fire this early; do not re-arm for less


class AttemptTimeout(Exception):
    def __init__(self, kind: TimeoutKind) -> None:
        super().__init__(kind)
        self.kind: TimeoutKind = kind


class AttemptWatchdog:
    """A sync context manager (entering it needs no coroutine) around one upstream attempt;
    the relay reports activity with `touch()` and writes to a slow client with `pause()`."""

    __slots__ = (
        "_cancelling",
        "_deadline",
        "_expired",
        "_first_byte",
        "_handle",
        "_idle",
        "_loop",
        "_phase",
        "_task",
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
        self._handle: asyncio.TimerHandle | None = None
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
        self._handle = loop.call_at(when, self._on_timer)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
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
        self.last = self._loop.time()
        expiry = self._expiry()
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
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
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
