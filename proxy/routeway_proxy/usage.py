"""Per-client usage: metric values labelled by client, cost, and the `GET /usage` report.

What is kept, per request of a ModelClient (applied by the ledger, off the request path):
- `routeway_requests_total{route, backend, code, client}` and
  `routeway_tokens_total{route, backend, type, client}` (client "" for gateway keys and open
  gateways: those are `PairMetrics`' own pre-bound values, so the common case costs nothing
  more), and `routeway_cost_total{client, route, backend, currency}`: the settled usage times
  the answering backend's `pricing` (a rollout arm's pinned spec has its own), in the
  backend's currency; nothing for a backend without pricing.
- the client's usage in the current UTC minute and UTC day (`ClientUsage`), as gauges
  `routeway_client_window{client, window, field}` (field: start, requests, promptTokens,
  completionTokens) and `routeway_client_window_cost{client, window, currency}`. Each process
  keeps its own windows (multiprocess mode "all": one series per worker pid) and restarts a
  window when a request falls into a new one; a reader sums the processes whose `start` is the
  current window's. Why gauges per process and not counters: a window's total over the group
  then needs no snapshots at boundaries and no channel between processes — the same files the
  supervisor's `GroupCollector` already sums for `/metrics` and `/observations` — and a worker
  that exits leaves its file, so its part of the window still counts. The series are bounded
  (clients x 2 windows x 4 fields, plus currencies). A request counts in the window of the
  moment its record is applied, at most `ledger.FLUSH_DELAY` after its answer.

`GET /usage` on the admin port (read-only), what the operator reads for `ModelClient.status`:

    {"at": "2026-12-06T08:37:12Z",
     "clients": [{"client": "default/search-team",      # every client of the served config
                  "currency": "USD",                     # of `cost`; null: none priced, or several
                  "minute": {"start": "2026-12-06T08:37:00Z", "requests": 3,
                             "promptTokens": 15, "completionTokens": 6,
                             "cost": 0.00012,            # in `currency`; 0 when nothing was
                                                         # priced, null with several currencies
                             "costByCurrency": {"USD": 0.00012}},
                  "day": {"start": "2026-12-06T00:00:00Z", ...same fields...}}]}

Numbers are sums over the process group (every worker of `serve`/`proxy --workers N`); a pod
reports its own traffic only, so the operator adds the pods of a gateway up. Requests without
a usage report count as requests with no tokens; cost is 0 for a backend without pricing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from routeway.proxyconfig import Pricing
    from routeway_proxy.metrics import ProxyMetrics

COST = "routeway_cost"
WINDOW = "routeway_client_window"
WINDOW_COST = "routeway_client_window_cost"
WINDOWS = (("minute", 60), ("day", 86400))
FIELDS = ("requests", "promptTokens", "completionTokens")


class UsageFamilies:
    """The cost counter and the window gauges, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cost = Counter(
            COST,
            "Cost of the settled usage (tokens x the backend's pricing), in the backend's currency.",
            ["client", "route", "backend", "currency"],
            registry=registry,
        )
        self.window = Gauge(
            WINDOW,
            "A client's usage in the current UTC minute/day, per process (summed by GET /usage).",
            ["client", "window", "field"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.window_cost = Gauge(
            WINDOW_COST,
            "A client's cost in the current UTC minute/day, per process (summed by GET /usage).",
            ["client", "window", "currency"],
            multiprocess_mode="all",
            registry=registry,
        )
        self._clients: dict[str, ClientUsage] = {}

    def for_client(self, client_id: str) -> ClientUsage:
        """The client's windows in this process: one object for the process's lifetime, so a
        new routing table keeps counting in the same window."""
        usage = self._clients.get(client_id)
        if usage is None:
            usage = self._clients[client_id] = ClientUsage(self, client_id)
        return usage


def price(pricing: Pricing, prompt: int, completion: int) -> float:
    return (prompt * pricing.input_per_million + completion * pricing.output_per_million) / 1_000_000


class ClientValues:
    """One client's values of a (route, backend) pair (`metrics.PairMetrics.count_client`);
    status-code children are bound on first use."""

    __slots__ = (
        "_codes",
        "_metrics",
        "backend",
        "client",
        "completion_tokens",
        "cost",
        "prompt_tokens",
        "route",
    )

    def __init__(
        self, metrics: ProxyMetrics, route: str, backend: str, pricing: Pricing | None, client: str
    ) -> None:
        values = metrics.values
        self._metrics = metrics
        self.route = route
        self.backend = backend
        self.client = client
        self.prompt_tokens = values.adopt(metrics.tokens.labels(route, backend, "prompt", client))
        self.completion_tokens = values.adopt(metrics.tokens.labels(route, backend, "completion", client))
        self.cost: Any = (
            None
            if pricing is None
            else values.adopt(metrics.usage.cost.labels(client, route, backend, pricing.currency))
        )
        self._codes: dict[int, Any] = {}

    def count(self, code: int, prompt: int, completion: int) -> None:
        value = self._codes.get(code)
        if value is None:
            metrics = self._metrics
            value = self._codes[code] = metrics.values.adopt(
                metrics.requests.labels(self.route, self.backend, str(code), self.client)
            )
        value.inc(1)
        if prompt:
            self.prompt_tokens.inc(prompt)
        if completion:
            self.completion_tokens.inc(completion)


class _Window:
    __slots__ = ("_cost", "_families", "_fields", "_start", "client", "length", "name", "start")

    def __init__(self, families: UsageFamilies, client: str, name: str, length: int) -> None:
        self._families = families
        self.client = client
        self.name = name
        self.length = length
        self.start = -1.0
        gauge = families.window
        self._start = gauge.labels(client, name, "start")
        self._fields = tuple(gauge.labels(client, name, field) for field in FIELDS)
        self._cost: dict[str, Gauge] = {}

    def add(self, now: float, prompt: int, completion: int, cost: float, currency: str | None) -> None:
        start = now - now % self.length
        if start != self.start:
            for child in (*self._fields, *self._cost.values()):
                child.set(0)
            self._start.set(start)  # last: a reader never sums the old values into the new window
            self.start = start
        requests, prompt_tokens, completion_tokens = self._fields
        requests.inc(1)
        if prompt:
            prompt_tokens.inc(prompt)
        if completion:
            completion_tokens.inc(completion)
        if currency is not None:
            cost_child = self._cost.get(currency)
            if cost_child is None:
                cost_child = self._cost[currency] = self._families.window_cost.labels(
                    self.client, self.name, currency
                )
            cost_child.inc(cost)


class ClientUsage:
    """One client's usage windows in this process (see the module docstring)."""

    __slots__ = ("_windows", "client_id")

    def __init__(self, families: UsageFamilies, client_id: str) -> None:
        self.client_id = client_id
        self._windows = tuple(_Window(families, client_id, name, length) for name, length in WINDOWS)

    def add(self, now: float, prompt: int, completion: int, cost: float, currency: str | None) -> None:
        for window in self._windows:
            window.add(now, prompt, completion, cost, currency)


# ---------------------------------------------------------------------------- GET /usage


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def usage_report(families: Iterable[Metric], clients: Iterable[str], now: float) -> dict[str, Any]:
    """The `GET /usage` document (module docstring) from collected metric families: one
    process's registry or the group's (`GroupCollector`), whose gauges carry a `pid` label."""
    starts: dict[tuple[str, str, str], float] = {}  # (client, window, pid) -> that process's start
    values: dict[tuple[str, str, str], dict[str, float]] = {}
    costs: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name not in (WINDOW, WINDOW_COST):
                continue
            labels = sample.labels
            key = (labels["client"], labels["window"], labels.get("pid", ""))
            if sample.name == WINDOW_COST:
                costs.setdefault(key, {})[labels["currency"]] = sample.value
            elif labels["field"] == "start":
                starts[key] = sample.value
            else:
                values.setdefault(key, {})[labels["field"]] = sample.value
    current = {name: now - now % length for name, length in WINDOWS}
    totals: dict[tuple[str, str], tuple[dict[str, float], dict[str, float]]] = {}
    for key, start in starts.items():
        client, window, _ = key
        if window not in current or start != current[window]:
            continue  # a process whose window is an earlier one (no request of the client since)
        fields, by_currency = totals.setdefault((client, window), ({}, {}))
        for field, value in values.get(key, {}).items():
            fields[field] = fields.get(field, 0.0) + value
        for currency, value in costs.get(key, {}).items():
            by_currency[currency] = by_currency.get(currency, 0.0) + value
    out = []
    for client in sorted(set(clients)):
        windows = {name: totals.get((client, name), ({}, {})) for name in current}
        used = {c for _, by_currency in windows.values() for c, v in by_currency.items() if v}
        only: str | None = next(iter(used)) if len(used) == 1 else None
        entry: dict[str, Any] = {"client": client, "currency": only}
        for name, (fields, by_currency) in windows.items():
            entry[name] = {
                "start": iso(current[name]),
                "requests": int(fields.get("requests", 0)),
                "promptTokens": int(fields.get("promptTokens", 0)),
                "completionTokens": int(fields.get("completionTokens", 0)),
                "cost": (by_currency.get(only, 0.0) if only is not None else (None if used else 0.0)),
                "costByCurrency": {c: v for c, v in sorted(by_currency.items()) if v},
            }
        out.append(entry)
    return {"at": iso(now), "clients": out}
