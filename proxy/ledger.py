"""Per-request accounting (request count, duration, tokens), applied in batches.

Why batches: a request's accounting is a handful of small updates, but done in the middle of
the request path each one runs with cold caches, between aiohttp's parser and writer — the
paired benchmark measured the token scan alone at ~3% of the proxy's CPU per request, about
eight times its cost in a tight loop. So the request path only appends one tuple to a list,
and the list is applied at once, in one loop over the same few functions, at most
`FLUSH_DELAY` later (the same idea as Envoy's periodic stats flush).

What this keeps exact:
- Reading metrics sees every request answered before the read: `/metrics` and `/routes`
  flush first, and so does any `registry.collect()` made on the event loop's thread (the
  ledger is registered as the first collector of the registry; it yields no metrics itself).
  A collect from another thread does not flush (the entries belong to the loop thread); the
  admin handlers flush on the loop before they collect in an executor.
- With several workers, each worker's values reach the shared files within `FLUSH_DELAY`,
  and a worker flushes before it exits.
- Nothing held is large: an answer body kept for its token scan is at most
  `DEFERRED_BODY_LIMIT` bytes (a larger one is scanned at once, where the scan costs little
  next to the transfer), and a batch lasts `FLUSH_DELAY` at most.

What stays immediate: in-flight gauges, TTFT, errors, retries, ejections, and health — the
failure streak of outlier detection depends on the order of outcomes, so it never waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Union

from prometheus_client.metrics_core import Metric
from routeway.proxy.streaming import find_document_tokens

if TYPE_CHECKING:
    from routeway.proxy.metrics import PairMetrics

FLUSH_DELAY = 0.1
"""Seconds from the first entry of a batch to its flush: far below any scrape interval."""

DEFERRED_BODY_LIMIT = 64 * 1024
"""Larger answer bodies have their usage read at once instead of being held for the batch."""

Usage = Union[bytes, tuple[int, int], None]  # noqa: UP007  (a runtime alias: 3.11 needs Union)
"""A JSON answer to scan for usage, (prompt, completion) tokens already read, or nothing."""

Entry = tuple["PairMetrics", int, float, Usage]
"""(pair, status code, seconds, usage) of one answered request."""


class RequestLedger:
    """Accounting entries of the answered requests, applied by `flush()`.

    The hot path appends to `entries` itself (see `Forwarder`), calling `schedule()` first
    when the list is empty; everything else calls `add()`.
    """

    __slots__ = ("_handle", "_owner", "delay", "entries")

    def __init__(self, delay: float = FLUSH_DELAY) -> None:
        self.delay = delay
        self.entries: list[Entry] = []
        self._handle: asyncio.TimerHandle | None = None
        self._owner: int | None = None  # the thread whose loop appends (and so flushes)

    def add(self, pair: PairMetrics, code: int, seconds: float, usage: Usage = None) -> None:
        entries = self.entries
        if not entries and not self.schedule():
            pair.count_request(code, seconds)  # no event loop (a synchronous caller): at once
            _count_usage(pair, usage)
            return
        entries.append((pair, code, seconds, usage))

    def schedule(self) -> bool:
        """Arm the flush of the batch that is starting; False outside an event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._handle is None:
            self._handle = loop.call_later(self.delay, self.flush)
        self._owner = threading.get_ident()
        return True

    def flush(self) -> None:
        """Apply every entry now (on the thread that appends them)."""
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
        entries = self.entries
        if not entries:
            return
        self.entries = []
        for pair, code, seconds, usage in entries:
            pair.count_request(code, seconds)
            if usage is not None:
                _count_usage(pair, usage)

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        """prometheus_client collector protocol: flush before the metrics are read, when read
        on the owning thread; no metrics of its own."""
        if self.entries and threading.get_ident() == self._owner:
            self.flush()
        return ()


def _count_usage(pair: PairMetrics, usage: Usage) -> None:
    if type(usage) is bytes:
        usage = find_document_tokens(usage)
    if usage is not None:
        prompt, completion = usage
        pair.count_tokens(prompt, completion)
