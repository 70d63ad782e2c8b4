"""Per-route, per-backend statistics for canary analysis, read from the Prometheus registry.

Why from the registry: the counters and histogram buckets are already kept for `/metrics`;
reading them back costs nothing on the hot path, and the same function reads one process's
registry or a registry holding a `MultiProcessCollector`, which merges every worker — so the
numbers describe the whole process group whichever worker answers.

Why buckets and not quantiles: buckets from several proxies (or two time windows) merge by
addition (`merge`); quantiles are computed last, from merged buckets, the way PromQL's
`histogram_quantile` does (linear interpolation inside the bucket).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from routeway_proxy.metrics import DURATION, EJECTED_UNTIL, IN_FLIGHT, REQUESTS, TTFT

PairKey = tuple[str, str]
"""(route id, backend id); backend "" for requests answered before a backend was chosen."""


@dataclass(frozen=True)
class Buckets:
    """A cumulative histogram: counts[i] observations were <= bounds[i]; last bound is +Inf."""

    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    total: float = 0.0  # sum of observed values

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def merge(self, other: Buckets) -> Buckets:
        if not self.bounds:
            return other
        if not other.bounds:
            return self
        if self.bounds != other.bounds:
            raise ValueError("cannot merge histograms with different buckets")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Buckets(self.bounds, counts, self.total + other.total)

    def quantile(self, q: float) -> float | None:
        """PromQL `histogram_quantile`: None when empty; the highest finite bound caps +Inf."""
        if not self.counts or self.count <= 0:
            return None
        rank = q * self.count
        previous_bound = 0.0
        previous_count = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return previous_bound
                in_bucket = count - previous_count
                if in_bucket <= 0:
                    return bound
                return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
            previous_bound, previous_count = bound, count
        return previous_bound


@dataclass(frozen=True)
class PairStats:
    by_code: Mapping[str, float] = field(default_factory=dict)
    latency: Buckets = Buckets()
    ttft: Buckets = Buckets()

    @property
    def requests(self) -> float:
        return sum(self.by_code.values())

    @property
    def errors(self) -> float:
        """Answers with a 5xx status (gateway or upstream): what canary analysis counts."""
        return sum(n for code, n in self.by_code.items() if code.startswith("5"))

    @property
    def error_rate(self) -> float | None:
        requests = self.requests
        return self.errors / requests if requests else None

    def merge(self, other: PairStats) -> PairStats:
        codes = dict(self.by_code)
        for code, n in other.by_code.items():
            codes[code] = codes.get(code, 0.0) + n
        return PairStats(codes, self.latency.merge(other.latency), self.ttft.merge(other.ttft))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for /routes."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "errorRate": self.error_rate,
            "byCode": dict(sorted(self.by_code.items())),
            "latencySeconds": _describe_quantiles(self.latency),
            "ttftSeconds": _describe_quantiles(self.ttft),
        }


def _describe_quantiles(buckets: Buckets) -> dict[str, float | None]:
    return {
        "count": buckets.count,
        "p50": buckets.quantile(0.50),
        "p95": buckets.quantile(0.95),
        "p99": buckets.quantile(0.99),
    }


@dataclass(frozen=True)
class ProxyStats:
    pairs: Mapping[PairKey, PairStats]
    ejected_until: Mapping[str, float]  # backend id -> unix time (max over workers)
    in_flight: Mapping[str, float] = field(default_factory=dict)  # route id -> requests (sum over workers)

    def for_pair(self, route: str, backend: str) -> PairStats:
        return self.pairs.get((route, backend), PairStats())


def read_stats(registry: CollectorRegistry) -> ProxyStats:
    """Collect `registry` once and fold the request-path families into per-pair stats."""
    return read_stats_from(registry.collect())


def read_stats_from(families: Iterable[Metric]) -> ProxyStats:
    codes: dict[PairKey, dict[str, float]] = {}
    histograms: dict[str, dict[PairKey, tuple[dict[float, float], float]]] = {DURATION: {}, TTFT: {}}
    ejected: dict[str, float] = {}
    in_flight: dict[str, float] = {}
    for family in families:
        name = family.name
        if name == REQUESTS:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    key = (labels["route"], labels["backend"])
                    per_code = codes.setdefault(key, {})
                    per_code[labels["code"]] = per_code.get(labels["code"], 0.0) + sample.value
        elif name in histograms:
            target = histograms[name]
            for sample in family.samples:
                labels = sample.labels
                key = (labels["route"], labels["backend"])
                bucket_map, total = target.get(key, ({}, 0.0))
                if sample.name.endswith("_bucket"):
                    bound = float(labels["le"])
                    bucket_map[bound] = bucket_map.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
                target[key] = (bucket_map, total)
        elif name == IN_FLIGHT:
            for sample in family.samples:
                route = sample.labels["route"]
                in_flight[route] = in_flight.get(route, 0.0) + sample.value
        elif name == EJECTED_UNTIL:
            for sample in family.samples:
                backend = sample.labels["backend"]
                ejected[backend] = max(ejected.get(backend, 0.0), sample.value)
    keys = set(codes) | set(histograms[DURATION]) | set(histograms[TTFT])
    pairs = {
        key: PairStats(
            codes.get(key, {}),
            _to_buckets(histograms[DURATION].get(key)),
            _to_buckets(histograms[TTFT].get(key)),
        )
        for key in keys
    }
    return ProxyStats(pairs, ejected, in_flight)


def _to_buckets(raw: tuple[dict[float, float], float] | None) -> Buckets:
    if raw is None or not raw[0]:
        return Buckets()
    bucket_map, total = raw
    bounds = tuple(sorted(bucket_map))
    return Buckets(bounds, tuple(bucket_map[b] for b in bounds), total)
