"""What proxies report for rollout analysis, and how reports become one window of traffic.

The format (one document per proxy process group, read from its admin port):

    {"schema": 1,
     "instance": "gw-7d9f-abcde",          # the reporting process group; a new one starts at zero
     "startedAt": 1700000000.0,             # when its counters started (unix seconds)
     "arms": [{"route": "default/chat", "revision": "3f9a…", "arm": "canary",
               "outcomes": {"success": 950, "serverError": 3, "timeout": 1,
                            "connectFailure": 0, "upstreamRejected": 2, "clientError": 12},
               "latency": {"bounds": [0.005, …, 300.0], "counts": [0, …, 0]},
               "ttft": {"bounds": [0.005, …, 30.0], "counts": [0, …, 0]}}]}

Counts are cumulative since `startedAt` and per *attempt* on the arm's backends, so an attempt
that failed on the canary counts against it even when a retry or fallback answered the client.
`serverError` is any upstream 5xx (500 included: it is the model's failure even if not
retried) or a gateway 5xx while talking to the arm; `timeout` and `connectFailure` are the
attempt's transport failures; `upstreamRejected` is an upstream 401, 403, 404, 408 or 429 —
answers that depend on the arm's own config (a wrong model name or url path, a bad or
unauthorised credential, a tight upstream quota), so a canary that gets them on every attempt
is failing, not idle: they count as failures and as requests. `clientError` is any other 4xx
(400, 413, 422: the request's own fault, the same on either arm) and is judged by no metric,
neither as a failure nor as a request. A report without `upstreamRejected` (an older proxy)
reads as 0. Histograms hold per-bucket counts (`counts[i]`: observations in (bounds[i-1],
bounds[i]]; one extra last count above the highest bound), never quantiles, so reports of
several pods and of several moments combine by addition and subtraction. Layouts may differ
between instances (a proxy upgrade) and change within one: see `ArmObservation.merge` and
`increase_since`. `latency` observes
successful attempts from sending upstream to the last byte; `ttft` successful streamed attempts
up to the first content chunk.

Why keyed by revision and not only by arm: a revision's counters mean the same thing whichever
arm it plays, so the canary that is promoted keeps its history as the new stable, and a new
canary starts from nothing instead of inheriting the superseded one's numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

OBSERVATION_SCHEMA = 1
ArmKey: TypeAlias = tuple[str, str]
"""(route id, revision hash)."""

LATENCY_BOUNDS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0,
    3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histogram proxies report: fixed, so reports of every
pod combine bucket by bucket; up to 300 s because a long generation is not a failure."""

TTFT_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the time-to-first-token histogram proxies report."""

OUTCOMES = ("success", "serverError", "timeout", "connectFailure", "upstreamRejected", "clientError")
"""The outcome classes of an attempt, as the report names them (see the module docstring)."""

UPSTREAM_REJECTIONS = frozenset({401, 403, 404, 408, 429})


def status_outcome(status: int) -> str | None:
    """The outcome class of an attempt the upstream answered with `status`; None for the
    statuses no class covers (1xx, 3xx: not an answer a model API gives)."""
    if 200 <= status < 300:
        return "success"
    if status >= 500:
        return "serverError"
    if status in UPSTREAM_REJECTIONS:
        return "upstreamRejected"
    if status >= 400:
        return "clientError"
    return None


@dataclass(frozen=True, slots=True)
class Histogram:
    """Per-bucket counts over fixed finite upper `bounds` (+1 overflow count at the end)."""

    bounds: tuple[float, ...] = ()
    counts: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram has one count per bound plus one above the last")
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("histogram bounds must increase")

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merge(self, other: Histogram) -> Histogram:
        if not other.total and not other.bounds:
            return self
        if not self.total and not self.bounds:
            return other
        if self.bounds != other.bounds:
            raise ValueError("cannot combine histograms with different bounds")
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    def minus(self, older: Histogram) -> Histogram:
        """The observations since `older`; all of self when the bounds changed (a new process)."""
        if self.bounds != older.bounds:
            return self
        return Histogram(self.bounds, tuple(a - b for a, b in zip(self.counts, older.counts, strict=True)))

    def quantile(self, q: float) -> float | None:
        """PromQL `histogram_quantile`: linear interpolation inside the bucket holding rank
        q·total, the lowest bucket starting at 0; a rank in the overflow bucket gives the
        highest finite bound. None when there is no observation."""
        total = self.total
        if total <= 0 or not self.bounds:
            return None
        rank = q * total
        below = 0
        lower = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            if below + count >= rank and count > 0:
                return lower + (bound - lower) * (rank - below) / count
            below += count
            lower = bound
        return self.bounds[-1]


@dataclass(frozen=True, slots=True)
class ArmObservation:
    """Outcome counts and histograms of one revision's attempts (cumulative or a window)."""

    success: int = 0
    server_error: int = 0
    timeout: int = 0
    connect_failure: int = 0
    client_error: int = 0
    upstream_rejected: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)

    @property
    def failures(self) -> int:
        """What errorRate counts: 5xx, timeouts, connection failures, upstream rejections."""
        return self.server_error + self.timeout + self.connect_failure + self.upstream_rejected

    @property
    def requests(self) -> int:
        """Attempts analysis judges (client errors excluded: not the arm's fault, nor its merit)."""
        return self.success + self.failures

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    def counts(self) -> tuple[int, ...]:
        """The outcome counters, in field order."""
        return (
            self.success,
            self.server_error,
            self.timeout,
            self.connect_failure,
            self.client_error,
            self.upstream_rejected,
        )

    @staticmethod
    def of(counts: tuple[int, ...], latency: Histogram, ttft: Histogram) -> ArmObservation:
        """The inverse of `counts`, with the histograms."""
        success, server_error, timeout, connect_failure, client_error, upstream_rejected = counts
        return ArmObservation(
            success, server_error, timeout, connect_failure, client_error, upstream_rejected, latency, ttft
        )

    def merge(self, other: ArmObservation) -> ArmObservation:
        """Both observations added up. A histogram of `other` whose bucket layout differs from
        self's (a proxy upgrade rolling out a new layout) is left out — its outcome counts still
        count — rather than raising, which would stop analysis of every route mid-upgrade; the
        layout met first (instances merge in id order) is kept, so the result is deterministic."""
        return ArmObservation.of(
            tuple(a + b for a, b in zip(self.counts(), other.counts(), strict=True)),
            _merge_or_keep(self.latency, other.latency),
            _merge_or_keep(self.ttft, other.ttft),
        )

    def increase_since(self, older: ArmObservation) -> ArmObservation:
        """Counter increase from `older` to self. A counter that went down means the counters
        restarted (as Prometheus' `increase` reads a reset): then all of self is new. So does a
        histogram whose bucket layout changed: its counts cannot be subtracted bucket by bucket,
        and diffing the other counters while keeping it whole would mix a window with all time."""
        if _layout_changed(self.latency, older.latency) or _layout_changed(self.ttft, older.ttft):
            return self
        diff = ArmObservation.of(
            tuple(a - b for a, b in zip(self.counts(), older.counts(), strict=True)),
            self.latency.minus(older.latency),
            self.ttft.minus(older.ttft),
        )
        if min(diff.counts()) < 0:
            return self
        if min(diff.latency.counts) < 0 or min(diff.ttft.counts) < 0:
            return self
        return diff


EMPTY = ArmObservation()


def _merge_or_keep(kept: Histogram, other: Histogram) -> Histogram:
    if kept.bounds and other.bounds and kept.bounds != other.bounds:
        return kept
    return kept.merge(other)


def _layout_changed(newer: Histogram, older: Histogram) -> bool:
    """Both have a layout and they differ (a histogram never reported has none: zero)."""
    return bool(older.bounds) and newer.bounds != older.bounds


@dataclass(frozen=True, slots=True)
class Report:
    """One proxy process group's cumulative observations at one moment."""

    instance: str
    started_at: float
    arms: Mapping[ArmKey, ArmObservation]


@dataclass(frozen=True, slots=True)
class Sample:
    """A report with the time the adapter read it (its own clock, not the proxy's)."""

    at: float
    report: Report


def window_observations(samples: Iterable[Sample], start: float, end: float) -> dict[ArmKey, ArmObservation]:
    """Traffic of each (route, revision) between `start` and `end`, merged over instances.

    Per instance: the newest sample at or before `end`, minus a baseline — the newest sample
    at or before `start`; without one, zero when the instance started inside the window (all
    its counts are), else its oldest sample (undercounting rather than judging a canary on
    traffic from before the window). A revision missing from the baseline counts from zero.

    Only samples of the newest one's run count (same `startedAt`): a process restarted under
    the same instance id starts its counters again, and a baseline from before the restart
    would subtract counts that are no longer there (undercounting it, or worse, when its new
    counters have already grown past the old ones, which no decrease would reveal).
    """
    by_instance: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.at <= end:
            by_instance.setdefault(sample.report.instance, []).append(sample)
    out: dict[ArmKey, ArmObservation] = {}
    for _, found in sorted(by_instance.items()):
        found.sort(key=lambda s: s.at)
        newest = found[-1]
        found = [s for s in found if s.report.started_at == newest.report.started_at]
        before = [s for s in found if s.at <= start]
        if before:
            baseline: Mapping[ArmKey, ArmObservation] = before[-1].report.arms
        elif newest.report.started_at >= start:
            baseline = {}
        else:
            baseline = found[0].report.arms
        for key, now in newest.report.arms.items():
            increase = now.increase_since(baseline.get(key, EMPTY))
            out[key] = out[key].merge(increase) if key in out else increase
    return out


# ---------------------------------------------------------------------------- JSON


def histogram_to_json(h: Histogram) -> dict[str, Any]:
    return {"bounds": list(h.bounds), "counts": list(h.counts)}


def histogram_from_json(doc: Mapping[str, Any]) -> Histogram:
    return Histogram(tuple(float(b) for b in doc.get("bounds", ())), tuple(int(c) for c in doc["counts"]))


def report_to_json(report: Report, arm_names: Mapping[ArmKey, str] | None = None) -> dict[str, Any]:
    """The document a proxy serves; `arm_names` ("stable"/"canary") is informational."""
    arms = []
    for (route, revision), obs in sorted(report.arms.items()):
        arms.append(
            {
                "route": route,
                "revision": revision,
                "arm": (arm_names or {}).get((route, revision)),
                "outcomes": {
                    "success": obs.success,
                    "serverError": obs.server_error,
                    "timeout": obs.timeout,
                    "connectFailure": obs.connect_failure,
                    "upstreamRejected": obs.upstream_rejected,
                    "clientError": obs.client_error,
                },
                "latency": histogram_to_json(obs.latency),
                "ttft": histogram_to_json(obs.ttft),
            }
        )
    return {
        "schema": OBSERVATION_SCHEMA,
        "instance": report.instance,
        "startedAt": report.started_at,
        "arms": arms,
    }


def report_from_json(doc: Mapping[str, Any]) -> Report:
    """Parse a proxy's report; raises ValueError on another schema or a malformed document."""
    if doc.get("schema") != OBSERVATION_SCHEMA:
        raise ValueError(f"unsupported observation schema {doc.get('schema')!r}")
    try:
        arms: dict[ArmKey, ArmObservation] = {}
        for arm in doc.get("arms", ()):
            outcomes = arm.get("outcomes", {})
            arms[(str(arm["route"]), str(arm["revision"]))] = ArmObservation(
                success=int(outcomes.get("success", 0)),
                server_error=int(outcomes.get("serverError", 0)),
                timeout=int(outcomes.get("timeout", 0)),
                connect_failure=int(outcomes.get("connectFailure", 0)),
                client_error=int(outcomes.get("clientError", 0)),
                upstream_rejected=int(outcomes.get("upstreamRejected", 0)),
                latency=histogram_from_json(arm["latency"]) if "latency" in arm else Histogram(),
                ttft=histogram_from_json(arm["ttft"]) if "ttft" in arm else Histogram(),
            )
        return Report(str(doc["instance"]), float(doc["startedAt"]), arms)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed observation report: {exc!r}") from exc


def arm_pair(
    window: Mapping[ArmKey, ArmObservation], route: str, stable: str, canary: str | None
) -> tuple[ArmObservation, ArmObservation]:
    """(stable, canary) observations of one route out of a window (empty where absent)."""
    return window.get((route, stable), EMPTY), (window.get((route, canary), EMPTY) if canary else EMPTY)
