"""The client connections of one process: their settings, the cap, and the one deadline sweep
(the connections themselves and their phases are in client_conn.py, whose docstring says why).

A connection holds at most one deadline (a float; 0: none). Rather than a timer per connection,
re-armed on every read, one sweep per process looks at every open connection every quarter of
the shortest timeout (at most once a second) and ends those whose deadline passed; a request
thus costs a few attribute writes. The sweep goes on after the listener closed (a drain) for
as long as connections are open, so a slow client cannot outstay the drain's own grace period
by trickling.

The same sweep ends a connection whose client stops reading its answer (a stream or a JSON
document): answer bytes left in the transport's buffer with none taken for `idle_timeout`
abort it (`reason="write_timeout"`); while the client takes them, the connection's own
deadline waits (it is not idle, and closing would wait for a flush). Without this, a client
with a small receive buffer that never reads would hold its upstream call and backend slot
(`maxConcurrency`) for good, since a relay waiting on the client stops its upstream idle clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from routeway_proxy.client_errors import MalformedRequestLog, raw_error_response

if TYPE_CHECKING:
    from routeway_proxy.client_conn import ClientConnection
    from routeway_proxy.metrics import ProxyMetrics

__all__ = [
    "BODY",
    "BUSY",
    "CLOSED",
    "HEADERS",
    "IDLE",
    "LINGER",
    "ClientConnections",
    "ConnectionLimits",
]

IDLE, HEADERS, BODY, BUSY, LINGER, CLOSED = range(6)
"""Phases of a connection (LINGER: the answer is out, aiohttp reads what is left of the body)."""

MIN_SWEEP_INTERVAL = 0.02
MAX_SWEEP_INTERVAL = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The client connection settings of a process (`--header-timeout` etc., `spec.connections`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_per_worker: int = 4096

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_per_worker < 1:
            raise ValueError("max_per_worker must be at least 1")

    @property
    def sweep_interval(self) -> float:
        shortest = min(self.header_timeout, self.body_timeout, self.idle_timeout)
        return max(MIN_SWEEP_INTERVAL, min(MAX_SWEEP_INTERVAL, shortest / 4))


class ClientConnections:
    """The open client connections of one process, their deadlines and the one sweep."""

    def __init__(self, limits: ConnectionLimits, metrics: ProxyMetrics | None = None) -> None:
        self.limits = limits
        self.open: set[ClientConnection] = set()
        self.malformed = MalformedRequestLog()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        if metrics is not None:
            closed = metrics.client_connections_closed
            self._count_over_limit: Callable[[], None] = closed.labels("over_limit").inc
            self._count_timeout = {
                IDLE: closed.labels("idle_timeout").inc,
                HEADERS: closed.labels("header_timeout").inc,
                BODY: closed.labels("body_timeout").inc,
                LINGER: closed.labels("body_timeout").inc,
            }
            self._count_write_timeout: Callable[[], None] = closed.labels("write_timeout").inc
            self._gauge_inc: Callable[[], None] = metrics.client_connections_open.inc
            self._gauge_dec: Callable[[], None] = metrics.client_connections_open.dec
        else:
            self._count_over_limit = _nothing
            self._count_timeout = {}
            self._count_write_timeout = _nothing
            self._gauge_inc = self._gauge_dec = _nothing
        # the answers made without a request object: rendered once
        self.timeout_answer = raw_error_response(
            408,
            f"The request headers were not received within {limits.header_timeout:g}s.",
            "request_timeout",
        )
        self.over_limit_answer = raw_error_response(
            503,
            "The gateway has too many open connections; retry shortly.",
            "too_many_connections",
            retry_after="1",
            error_type="server_error",
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closing = False
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.limits.sweep_interval, self._sweep)

    def stop(self) -> None:
        """The listener closed: sweep until the last connection is gone, then stop."""
        self._closing = True
        if not self.open and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def admit(self, connection: ClientConnection) -> bool:
        if len(self.open) >= self.limits.max_per_worker:
            self._count_over_limit()
            return False
        self.open.add(connection)
        self._gauge_inc()
        return True

    def release(self, connection: ClientConnection) -> None:
        if connection in self.open:
            self.open.discard(connection)
            self._gauge_dec()

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._closing and not self.open:
            self._sweeper = None
            return
        self._sweeper = loop.call_later(self.limits.sweep_interval, self._sweep)
        now = loop.time()
        write_limit = self.limits.idle_timeout
        expired: list[ClientConnection] = []
        stalled: list[ClientConnection] = []
        for connection in self.open:
            writing = connection.write_stalled(now, write_limit)
            if writing is None:  # no answer waiting on the client: its deadline applies
                if 0.0 < connection.deadline <= now:
                    expired.append(connection)
            elif writing:
                stalled.append(connection)
        for connection in expired:
            count = self._count_timeout.get(connection.phase)
            if connection.expire() and count is not None:
                count()
        for connection in stalled:
            connection.abort_write()
            self._count_write_timeout()


def _nothing() -> None:
    return None
