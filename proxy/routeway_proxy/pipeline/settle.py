"""Settle: the end of every request, whatever path it took — one accounting record.

The record is (metrics pair, final status, duration, usage, the caller's client usage — None
for no ModelClient; the caller's client id labels its metrics). Each request is settled once,
where it ends: `Exchange.run` for a routed request (its answer, an error raised before any
answer, a client that went away, a drain's abort), the inference handler for one refused
before routing. `ledger.py` applies records in batches.

Limits are settled by the limit stage from the same outcome (`limit.run_limited`, which
reads `Exchange.outcome` when the answer is over); a cache hit is settled by `handle.py` with
no upstream tokens (its token reservation released in full).

With `--access-log` the callers write the request's log line beside its record
(`access_log.py`; off, one `metrics.access is None` check): the line scans a JSON answer's
usage and hands the ledger the result, so the usage is read once either way.

The response cache is filled here (`fill_cache`), after the client has its last byte: a
stream's assembled answer is parsed only then, so storing never delays an answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeway_proxy.ledger import RequestLedger, UsageSource
    from routeway_proxy.metrics import PairMetrics
    from routeway_proxy.pipeline.authenticate import Caller
    from routeway_proxy.pipeline.cache import CacheTicket

CLIENT_CLOSED = 499
"""The status a request is accounted with when its client went away before the answer ended."""


def settle(
    ledger: RequestLedger,
    pair: PairMetrics,
    code: int,
    seconds: float,
    usage: UsageSource = None,
    caller: Caller | None = None,
) -> None:
    ledger.add(pair, code, seconds, usage, caller.usage if caller is not None else None)


def fill_cache(ticket: CacheTicket) -> None:
    """Store the request's answer when it was kept (complete, successful) and is storable."""
    answer = ticket.answer()
    if answer is not None:
        ticket.cache.store(ticket.route_id, ticket.plan, answer)
