"""Judging a canary: the canary arm against its limits and against the stable arm.

`judge` looks at one window of both arms' observations (routeway.rollout.observations) and
returns, per metric, the stable value, the canary value and a verdict, plus one overall
verdict. Quantiles are computed here, last, from bucket counts already merged over pods and
time (PromQL's `histogram_quantile`), never from precomputed quantiles, which do not combine.

Rules:
- Fewer judged canary attempts in the window than `minRequests`: every metric and the whole
  check are inconclusive, however bad the numbers look — too little traffic decides nothing
  (and never passes).
- `max`: the canary value above it fails; equal passes. No canary value (e.g. a latency
  quantile when every attempt failed) is inconclusive for that metric.
- `maxRatioToStable`: the canary value above ratio x the stable value over the same window
  fails. A stable arm with no data is inconclusive; a stable value of 0 tolerates only 0.
- Overall: any failed metric fails the check; else any inconclusive one makes it
  inconclusive; else it passes.
- No observations at all (the adapter could not gather a window, e.g. a proxy pod it could not
  reach): `unobserved` — inconclusive with that reason, so onInconclusive decides. Skipping the
  check instead would let steps advance and promote with analysis silently off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from routeway.rollout.observations import ArmObservation
from routeway.rollout.strategy import Analysis, MetricCheck, MetricName

Verdict = Literal["pass", "fail", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "inconclusive")


@dataclass(frozen=True, slots=True)
class MetricResult:
    metric: MetricName
    stable: float | None
    canary: float | None
    verdict: Verdict
    max: float | None = None
    max_ratio_to_stable: float | None = None

    def describe(self) -> str:
        """The numbers and the limit, for an Event or a condition message."""
        parts = [f"{self.metric} {_fmt(self.metric, self.canary)}"]
        if self.max is not None:
            parts.append(f"max {_fmt(self.metric, self.max)}")
        if self.max_ratio_to_stable is not None:
            parts.append(f"max {self.max_ratio_to_stable:g}x stable")
        return f"{', '.join(parts)} (stable {_fmt(self.metric, self.stable)}): {self.verdict}"


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    metrics: tuple[MetricResult, ...]
    canary_requests: int
    stable_requests: int
    min_requests: int
    reason: str = ""
    """Why the whole check is inconclusive whatever its metrics say (e.g. "no observations")."""

    def summary(self) -> str:
        """What decided the verdict: the failing (or inconclusive) metrics with their numbers."""
        if self.reason:
            return f"{self.verdict}: {self.reason}"
        counts = f"{self.canary_requests} canary / {self.stable_requests} stable requests"
        if self.canary_requests < self.min_requests:
            return f"inconclusive: {counts} in the window, fewer than minRequests {self.min_requests}"
        deciding = [m for m in self.metrics if m.verdict == self.verdict] or list(self.metrics)
        return f"{self.verdict}: {'; '.join(m.describe() for m in deciding)} over {counts}"


def metric_value(name: MetricName, obs: ArmObservation) -> float | None:
    """One metric of one arm's window; None when the window holds nothing to compute it from."""
    if name == "errorRate":
        return obs.error_rate
    histogram = obs.latency if name.startswith("latency") else obs.ttft
    return histogram.quantile(0.95 if name.endswith("P95") else 0.50)


def judge(
    metrics: Sequence[MetricCheck], stable_obs: ArmObservation, canary_obs: ArmObservation, analysis: Analysis
) -> Judgement:
    """Judge `metrics` (usually `analysis.metrics`) on one window of both arms."""
    enough = canary_obs.requests >= analysis.min_requests
    results = []
    for check in metrics:
        stable = metric_value(check.name, stable_obs)
        canary = metric_value(check.name, canary_obs)
        verdict = _check(check, stable, canary) if enough else "inconclusive"
        results.append(
            MetricResult(check.name, stable, canary, verdict, check.max, check.max_ratio_to_stable)
        )
    verdicts = {r.verdict for r in results}
    overall: Verdict = (
        "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    )
    if not enough:
        overall = "inconclusive"
    return Judgement(overall, tuple(results), canary_obs.requests, stable_obs.requests, analysis.min_requests)


def unobserved(metrics: Sequence[MetricCheck], analysis: Analysis, reason: str) -> Judgement:
    """A due check with no window to judge: inconclusive for `reason`, every metric without
    values (still listed, so the status shows what could not be judged)."""
    results = tuple(
        MetricResult(c.name, None, None, "inconclusive", c.max, c.max_ratio_to_stable) for c in metrics
    )
    return Judgement("inconclusive", results, 0, 0, analysis.min_requests, reason)


def _check(check: MetricCheck, stable: float | None, canary: float | None) -> Verdict:
    if canary is None:
        return "inconclusive"
    verdicts: list[Verdict] = []
    if check.max is not None:
        verdicts.append("fail" if canary > check.max else "pass")
    if check.max_ratio_to_stable is not None:
        if stable is None:
            verdicts.append("inconclusive")
        else:
            verdicts.append("fail" if canary > check.max_ratio_to_stable * stable else "pass")
    if "fail" in verdicts:
        return "fail"
    return "inconclusive" if "inconclusive" in verdicts else "pass"


def _fmt(metric: MetricName, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "errorRate":
        return f"{value:.4g}"
    return f"{value:.4g}s"
