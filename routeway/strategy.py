"""The progressive-delivery part of a ModelRoute's spec: `strategy.canary` (steps and
analysis) and the route-level `revisionHistoryLimit`, `paused` and `progressDeadline` limits.

Fields and validation are pinned by issue 12; translation reads none of this: the rollout
adapters do (`routeway.rollout.policy_from_spec`, run by `routeway serve` in
routeway/serve_rollouts.py). Every rule is stated twice, once for each judge: a
pydantic validator for `routeway validate` and the operator, and the same rule in the CRD
(schema keyword or CEL in `CEL_RULES` / `x-kubernetes-validations`) for the API server.
`tests/crds/test_crds_agreement.py` holds a good and a bad example per rule for both.

One field the API server cannot judge fully: a metric's `max` is a number for `errorRate`
and a duration string for the latency metrics, so its CRD node has no single type. A
structural schema allows that only as an untyped node, which Kubernetes hides from CEL; the
CRD then checks what holds for every metric (a number lies within 0..1, a string is a
duration) and pydantic checks the rest (which of the two a metric needs). In a cluster the
operator reports such a route `Accepted=False` with the reason `Invalid`.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator

from routeway.durations import DURATION_PATTERN, Duration, DurationRange, parse_duration
from routeway.specbase import FieldError, SpecModel

PAUSE_DURATION = DurationRange("pause.duration", "1s", "720h")
INTERVAL = DurationRange("interval", "1s", "1h")
PROGRESS_DEADLINE = DurationRange("progressDeadline", "1s", "720h")
MAX_WINDOW = "24h"

PauseDuration = Annotated[str, AfterValidator(PAUSE_DURATION.check), PAUSE_DURATION.field()]
IntervalDuration = Annotated[str, AfterValidator(INTERVAL.check), INTERVAL.field()]
ProgressDeadline = Annotated[str, AfterValidator(PROGRESS_DEADLINE.check), PROGRESS_DEADLINE.field()]

MetricName = Literal["errorRate", "latencyP95", "latencyP50", "ttftP95", "ttftP50"]
OnInconclusive = Literal["Pause", "Fail", "Continue"]

STEP_MESSAGE = "a step sets exactly one of setWeight or pause (pause: {} waits for a manual promote)"
WEIGHTS_MESSAGE = "setWeight must not decrease from one step to the next"
WINDOW_MESSAGE = f"window must be at least interval and at most {MAX_WINDOW} (window defaults to 5m)"
UNIQUE_METRICS_MESSAGE = "metric names must be unique within an analysis"
METRIC_LIMIT_MESSAGE = "a metric needs max, maxRatioToStable or both"


def _metric_max(value: object) -> float | str:
    """A number or a string; which of the two a metric needs is AnalysisMetric's check."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number (errorRate) or a duration (latency and ttft metrics)")
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


# Untyped in the CRD (see the module docstring). JSON Schema applies `minimum`/`maximum` to
# numbers only and `pattern` to strings only, and so does the API server: what is true of
# every metric's `max` is checked there too.
MetricMax = Annotated[
    float | str,
    PlainValidator(_metric_max),
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            "minimum": 0,
            "maximum": 1,
            "pattern": DURATION_PATTERN,
        }
    ),
]


class PauseStep(SpecModel):
    duration: PauseDuration | None = Field(
        None,
        description="How long to wait before the next step, 1s to 720h. Without it (`pause: {}`) "
        "the rollout waits for a manual promote.",
    )


class CanaryStep(SpecModel):
    """One step: exactly one of setWeight or pause."""

    set_weight: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Percent of the route's traffic (1-100) sent to the new revision, spread by "
        "its backends' weights; the rest goes to the stable revision. Never lower than an "
        "earlier step's setWeight.",
    )
    pause: PauseStep | None = Field(
        None, description="Wait: for `duration`, or with `{}` until a manual promote."
    )

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError(STEP_MESSAGE)
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "has(self.setWeight) != has(self.pause)", "message": STEP_MESSAGE},
    ]


class AnalysisMetric(SpecModel):
    """A limit the canary arm must keep: absolute, relative to the stable arm, or both."""

    # `name` is required and unknown fields are rejected (or pruned before validation), so
    # "at least two properties" is "max, maxRatioToStable or both" for the API server, which
    # cannot read the untyped `max` in a CEL rule.
    model_config = ConfigDict(json_schema_extra={"minProperties": 2})  # merged with SpecModel's

    name: MetricName = Field(
        description="What is measured on each arm over the window: errorRate (5xx answers, "
        "timeouts, connection failures and upstream rejections — 401, 403, 404, 408, 429 — per "
        "attempt; errors of the request itself, 400, 413 and 422, excluded), latencyP95 and "
        "latencyP50 (request duration), ttftP95 and ttftP50 (time to first token)."
    )
    max: MetricMax | None = Field(
        None,
        description="Absolute limit for the canary arm: for errorRate a fraction from 0 to 1 "
        "(0.02 = 2%), for the latency and ttft metrics a duration (20s). A check fails when the "
        "canary's value is above it.",
    )
    max_ratio_to_stable: float | None = Field(
        None,
        gt=0,
        description="Limit relative to the stable arm over the same window: a check fails when "
        "the canary's value is above this many times the stable's (1.3 = 30% worse).",
    )

    @model_validator(mode="after")
    def _limits(self) -> AnalysisMetric:
        if self.max is None and self.max_ratio_to_stable is None:
            raise ValueError(METRIC_LIMIT_MESSAGE)
        if self.max is None:
            return self
        if self.name == "errorRate":
            if isinstance(self.max, str) or not 0 <= self.max <= 1:
                raise FieldError("max", "errorRate's max is a fraction from 0 to 1, e.g. 0.02")
        elif not isinstance(self.max, str):
            raise FieldError("max", f"{self.name}'s max is a duration, e.g. 20s")
        else:
            try:
                parse_duration(self.max)
            except ValueError as exc:
                raise FieldError("max", str(exc)) from None
        return self

    @property
    def max_value(self) -> float | None:
        """`max` as a number: the fraction for errorRate, seconds for the other metrics."""
        if isinstance(self.max, str):
            return parse_duration(self.max)
        return self.max


class AnalysisSpec(SpecModel):
    interval: IntervalDuration = Field(
        "30s", description="Time between two checks, 1s to 1h; checks run during the whole rollout."
    )
    window: Duration = Field(
        "5m",
        description=f"Each check judges the last `window` of traffic; at least interval (so no "
        f"request goes unjudged) and at most {MAX_WINDOW}.",
    )
    min_requests: int = Field(
        100,
        ge=0,
        le=1_000_000_000,
        description="Fewest canary requests in the window for a check to judge; with fewer the "
        "check is inconclusive, never a pass.",
    )
    failure_limit: int = Field(
        0,
        ge=0,
        le=1000,
        description="Failed checks tolerated during a rollout; one more rolls it back.",
    )
    on_inconclusive: OnInconclusive = Field(
        "Pause",
        description="What an inconclusive check does: Pause (the rollout waits for a person), "
        "Fail (it counts as a failed check) or Continue (the steps go on).",
    )
    metrics: list[AnalysisMetric] = Field(
        min_length=1,
        max_length=5,
        description="Limits every check applies; a check fails when any metric is over its "
        "limit. Names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _window_and_names(self) -> AnalysisSpec:
        window, interval = parse_duration(self.window), parse_duration(self.interval)
        if not interval <= window <= parse_duration(MAX_WINDOW):
            raise FieldError("window", f"{WINDOW_MESSAGE}: {self.window} with interval {self.interval}")
        seen: set[str] = set()
        for i, metric in enumerate(self.metrics):
            if metric.name in seen:
                raise FieldError(f"metrics[{i}].name", f"{UNIQUE_METRICS_MESSAGE}: {metric.name}")
            seen.add(metric.name)
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "duration(self.window) >= duration(self.interval) "
            f"&& duration(self.window) <= duration('{MAX_WINDOW}')",
            "message": WINDOW_MESSAGE,
        },
        {
            "rule": "self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
            "message": UNIQUE_METRICS_MESSAGE,
        },
    ]


class CanarySpec(SpecModel):
    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=64,
        description="Run in order, e.g. `- setWeight: 10`, `- pause: {duration: 5m}`, `- pause: {}`. "
        "setWeight never decreases; after the last step the new revision takes all traffic "
        "and becomes the stable one.",
    )
    analysis: AnalysisSpec | None = Field(
        None,
        description="Checks of the canary arm, every interval during the whole rollout; more "
        "failed checks than failureLimit roll it back. Without analysis the steps only move "
        "weights.",
    )

    @model_validator(mode="after")
    def _weights_never_decrease(self) -> CanarySpec:
        highest = 0
        for i, step in enumerate(self.steps):
            if step.set_weight is None:
                continue
            if step.set_weight < highest:
                raise FieldError(
                    f"steps[{i}].setWeight", f"{WEIGHTS_MESSAGE} ({step.set_weight} after {highest})"
                )
            highest = step.set_weight
        return self

    # isSorted() is in Kubernetes' CEL list library (since 1.24); the offline tests register it.
    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            "message": WEIGHTS_MESSAGE,
        },
    ]


class StrategySpec(SpecModel):
    canary: CanarySpec = Field(
        description="Move traffic to a new revision of the route in steps, judged by analysis, "
        "rolled back by itself when it fails."
    )
