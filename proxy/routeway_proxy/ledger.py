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
  and a worker flushes before it exits. A worker that dies without exiting (SIGKILL after a
  hang, the OOM killer) loses the counts of its last `FLUSH_DELAY` seconds at most.
- Nothing held is large: an answer body kept for its token scan is at most
  `DEFERRED_BODY_LIMIT` bytes (a larger one is scanned at once, where the scan costs little
  next to the transfer), and a batch lasts `FLUSH_DELAY` or `BATCH_LIMIT` entries at most.

What stays immediate: in-flight gauges, TTFT, errors, retries, ejections, and health — the
failure streak of outlier detection depends on the order of outcomes, so it never waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Union

from prometheus_client.metrics_core import Metric

from routeway_proxy.streaming import Usage, find_document_usage

if TYPE_CHECKING:
    from routeway_proxy.metrics import PairMetrics
    from routeway_proxy.usage import ClientUsage

log = logging.getLogger("routeway.proxy")

FLUSH_DELAY = 0.1
"""Seconds from the first entry of a batch to its flush: far below any scrape interval."""

DEFERRED_BODY_LIMIT = 16 * 1024
"""Larger answer bodies have their usage read at once instead of being held for the batch."""

BATCH_LIMIT = 1024
"""A batch this long is applied at once: with `DEFERRED_BODY_LIMIT`, at most 16 MiB is held."""

UsageSource = Union[bytes, Usage, None]  # noqa: UP007  (a runtime alias: 3.11 needs Union)
"""A JSON answer to scan for usage, its `Usage` already read, or nothing."""

Entry = tuple["PairMetrics", int, float, UsageSource, "ClientUsage | None"]
"""(pair, status code, seconds, usage, the caller's ModelClient usage or None) of one answered
request. Clients are counted under their label, with their usage windows (`usage.py`); a
request without a client takes the pair's own pre-bound values, as before clients existed."""


class RequestLedger:
    """Accounting entries of the answered requests, applied by `flush()`.

    `add()` is the one way in. It re-arms the timer when the loop it was armed on ended with a
    batch pending (the proxy app flushes in its cleanup, so only a ledger used across loops
    without the app needs that).
    """

    __slots__ = ("_handle", "_loop", "_owner", "delay", "entries")

    def __init__(self, delay: float = FLUSH_DELAY) -> None:
        self.delay = delay
        self.entries: list[Entry] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `_handle` is armed on
        self._owner: int | None = None  # the thread whose loop appends (and so flushes)

    def add(
        self,
        pair: PairMetrics,
        code: int,
        seconds: float,
        usage: UsageSource = None,
        client: ClientUsage | None = None,
    ) -> None:
        if type(usage) is bytes and len(usage) > DEFERRED_BODY_LIMIT:
            usage = find_document_usage(usage)  # not held: scanned now
        entries = self.entries
        armed_on = self._loop
        if (not entries or armed_on is None or armed_on.is_closed()) and not self._schedule():
            _account(pair, code, seconds, usage, client, time.time())  # no event loop: at once
            return
        entries.append((pair, code, seconds, usage, client))
        if len(entries) >= BATCH_LIMIT:
            self.flush()

    def _schedule(self) -> bool:
        """Arm the flush of the batch that is starting; False outside an event loop. A timer
        left on another loop (one that ended with a batch pending) is replaced, not relied on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._handle is None or self._loop is not loop:
            self._handle = loop.call_later(self.delay, self._on_timer)
            self._loop = loop
        self._owner = threading.get_ident()
        return True

    def _on_timer(self) -> None:
        if threading.get_ident() == self._owner:  # a stale timer of another thread's loop: no
            self.flush()

    def flush(self) -> None:
        """Apply every entry now (on the thread that appends them)."""
        handle = self._handle
        if handle is not None:
            self._handle = None
            if self._loop is not None and not self._loop.is_closed():
                handle.cancel()
        entries = self.entries
        if not entries:
            return
        self.entries = []
        now = time.time()  # the usage windows' clock: one reading per batch
        for pair, code, seconds, usage, client in entries:
            try:
                if client is None:
                    pair.count_request(code, seconds)
                    if usage is not None:
                        _count_usage(pair, usage)
                else:
                    _account(pair, code, seconds, usage, client, now)
            except Exception:  # a bug must cost one entry, not the batch or the scrape
                log.exception("accounting a request failed")

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        """prometheus_client collector protocol: flush before the metrics are read, when read
        on the owning thread; no metrics of its own."""
        if self.entries and threading.get_ident() == self._owner:
            self.flush()
        return ()


def _account(
    pair: PairMetrics, code: int, seconds: float, usage: UsageSource, client: ClientUsage | None, now: float
) -> None:
    if client is None:
        pair.count_request(code, seconds)
        _count_usage(pair, usage)
        return
    if type(usage) is bytes:
        usage = find_document_usage(usage)
    prompt, completion = usage if usage is not None else (0, 0)
    pair.count_client(client, code, seconds, prompt, completion, now)


def _count_usage(pair: PairMetrics, usage: UsageSource) -> None:
    if type(usage) is bytes:
        usage = find_document_usage(usage)
    if usage is not None:
        prompt, completion = usage
        pair.count_tokens(prompt, completion)
