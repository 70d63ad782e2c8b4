"""Observations of each (route, revision) for rollout analysis, kept as Prometheus metrics.

What is kept: per attempt on an arm's backends, a count by outcome class, the latency of a
successful attempt (from its start to the last byte) and the time to the first content chunk
of a successful streamed one — exactly the classes and histograms of the report format in
`routeway.rollout.observations` (its docstring is the contract). `report_from_metrics` turns
the metric samples back into that report.

Why Prometheus metrics and not the request ledger: they are the process group's shared memory
already — with `--workers N` each worker writes its values into prometheus-client's mmap
files and the supervisor's `GroupCollector` sums them, so the group's report needs no new
channel between processes, and the same numbers are on `/metrics` for dashboards
(`routeway_arm_attempts_total{route,revision,arm,outcome}`, `routeway_arm_latency_seconds`,
`routeway_arm_ttft_seconds`). The ledger batches one record per *request*; observations are
per *attempt* (a failed canary attempt must count even when a fallback answered), and the
updates are bound value objects (`metric_values`), a few attribute writes per attempt, bound
once per config and only for routes whose `revision` is set.

Why an `arm` label beside `revision`: dashboards read "stable vs canary" directly. A revision
that changes arm (a promoted canary) then has two series; the report sums them, since it is
keyed by (route, revision) only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric

from routeway.rollout.observations import (
    LATENCY_BOUNDS,
    OUTCOMES,
    TTFT_BOUNDS,
    ArmKey,
    ArmObservation,
    Report,
    status_outcome,
)
from routeway.rollout.observations import Histogram as ObservedHistogram
from routeway_proxy.metric_values import MetricValues

ARM_ATTEMPTS = "routeway_arm_attempts"
ARM_LATENCY = "routeway_arm_latency_seconds"
ARM_TTFT = "routeway_arm_ttft_seconds"

REASON_OUTCOME = {
    "connect-failure": "connectFailure",
    "timeout": "timeout",
    "idle-timeout": "timeout",
    "total-timeout": "timeout",
    "disconnect": "serverError",  # the upstream closed mid-answer: a gateway 502
    "overloaded": "serverError",  # no concurrency slot on the arm's backend: a gateway 503
    "5xx": "serverError",
    "429": "upstreamRejected",
}
"""The outcome class of a failed attempt, by its failure reason (metrics.ErrorReason)."""


class ArmFamilies:
    """The three metric families of arm observations, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            ARM_ATTEMPTS,
            "Upstream attempts of a route revision, by outcome class (rollout analysis).",
            ["route", "revision", "arm", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            ARM_LATENCY,
            "Successful attempts of a route revision: attempt start to last byte.",
            ["route", "revision", "arm"],
            buckets=LATENCY_BOUNDS,
            registry=registry,
        )
        self.ttft = Histogram(
            ARM_TTFT,
            "Successful streamed attempts of a route revision: attempt start to first content chunk.",
            ["route", "revision", "arm"],
            buckets=TTFT_BOUNDS,
            registry=registry,
        )

    def collect(self) -> Iterator[Metric]:
        """Only these families (a single process's report needs nothing else)."""
        return itertools.chain(self.attempts.collect(), self.latency.collect(), self.ttft.collect())


class ArmRecorder:
    """The bound values of one (route, revision, arm): what the request path updates."""

    __slots__ = ("_outcomes", "arm", "latency", "revision", "route", "success", "ttft")

    def __init__(
        self, families: ArmFamilies, values: MetricValues, route: str, revision: str, arm: str
    ) -> None:
        self.route = route
        self.revision = revision
        self.arm = arm
        self._outcomes: dict[str, Any] = {
            outcome: values.adopt(families.attempts.labels(route, revision, arm, outcome))
            for outcome in OUTCOMES
        }
        self.success = self._outcomes["success"]
        self.latency: Any = values.histogram(families.latency.labels(route, revision, arm))
        self.ttft: Any = values.histogram(families.ttft.labels(route, revision, arm))

    def succeeded(self, seconds: float, ttft: float | None = None) -> None:
        self.success.inc(1)
        self.latency.observe(seconds)
        if ttft is not None:
            self.ttft.observe(ttft)

    def failed(self, reason: str) -> None:
        """A failed attempt, by its failure reason (`REASON_OUTCOME`)."""
        self._outcomes[REASON_OUTCOME.get(reason, "serverError")].inc(1)

    def answered(self, status: int) -> None:
        """An attempt the upstream answered with a status that is not retried elsewhere
        (a success goes to `succeeded`, for its latency)."""
        outcome = status_outcome(status)
        if outcome is not None:
            self._outcomes[outcome].inc(1)


def report_from_metrics(families: Iterable[Metric], instance: str, started_at: float) -> Report:
    """The observation report out of collected metric families (one registry's, or the
    `GroupCollector`'s sum of a worker group's). Samples are matched by name, so the family
    names a multiprocess collector gives do not matter; series of one revision under both arm
    labels add up; cumulative Prometheus buckets become per-bucket counts."""
    counts: dict[ArmKey, dict[str, float]] = {}
    buckets: dict[tuple[ArmKey, str], dict[float, float]] = {}
    attempts = ARM_ATTEMPTS + "_total"
    histograms = {ARM_LATENCY + "_bucket": "latency", ARM_TTFT + "_bucket": "ttft"}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == attempts:
                key = (labels["route"], labels["revision"])
                by_outcome = counts.setdefault(key, {})
                outcome = labels["outcome"]
                by_outcome[outcome] = by_outcome.get(outcome, 0.0) + sample.value
            elif sample.name in histograms:
                key = (labels["route"], labels["revision"])
                cumulative = buckets.setdefault((key, histograms[sample.name]), {})
                le = float(labels["le"])
                cumulative[le] = cumulative.get(le, 0.0) + sample.value
    arms: dict[ArmKey, ArmObservation] = {}
    for key in sorted(set(counts) | {k for k, _ in buckets}):
        by_outcome = counts.get(key, {})
        arms[key] = ArmObservation(
            success=int(by_outcome.get("success", 0)),
            server_error=int(by_outcome.get("serverError", 0)),
            timeout=int(by_outcome.get("timeout", 0)),
            connect_failure=int(by_outcome.get("connectFailure", 0)),
            client_error=int(by_outcome.get("clientError", 0)),
            upstream_rejected=int(by_outcome.get("upstreamRejected", 0)),
            latency=per_bucket(buckets.get((key, "latency"), {})),
            ttft=per_bucket(buckets.get((key, "ttft"), {})),
        )
    return Report(instance, started_at, arms)


def per_bucket(cumulative: Mapping[float, float]) -> ObservedHistogram:
    """Prometheus' cumulative `le` buckets (+Inf included) as per-bucket counts."""
    if not cumulative:
        return ObservedHistogram()
    bounds = tuple(sorted(b for b in cumulative if not math.isinf(b)))
    counts = []
    below = 0.0
    for bound in (*bounds, math.inf):
        at_or_below = cumulative.get(bound, below)
        counts.append(int(at_or_below - below))
        below = at_or_below
    return ObservedHistogram(bounds, tuple(counts))
