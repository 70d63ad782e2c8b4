"""Prometheus families of the limits, defined here and registered by whoever wires them.

Labels stay bounded: `client` and `route` are names from the applied config (never a key),
`limit` is a spec field name (`requestsPerMinute`, `tokensPerMinute`, `tokensPerDay`), `store`
and `outcome` come from fixed vocabularies.

`routeway_ratelimit_remaining` is per budget: a client's budget has `route=""`, a route's
`client=""`. Every worker sets it after each of its decisions; with the shared table all
workers see the same budget, so the group reports the most recent value (`livemostrecent`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REJECTIONS = "routeway_ratelimit_rejections"
REMAINING = "routeway_ratelimit_remaining"
STORE_FAILURES = "routeway_ratelimit_store_failures"


class LimitMetrics:
    """The limit families in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejections = Counter(
            REJECTIONS,
            "Requests refused with 429 for a limit, by client, route and the limit that failed.",
            ["client", "route", "limit"],
            registry=registry,
        )
        self.remaining = Gauge(
            REMAINING,
            "What is left of a budget (requests or tokens) after the latest decision.",
            ["client", "route", "limit"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.store_failures = Counter(
            STORE_FAILURES,
            "Decisions the limit store could not make (Redis unreachable or slow, table full), "
            "by store and what came of it (admitted, rejected, unsettled, unread: an answer "
            "refused before the limit stage went without rate-limit headers).",
            ["store", "outcome"],
            registry=registry,
        )
