"""The rollout policy a route asks for, as plain frozen values with durations in seconds.

These mirror the pinned `ModelRoute.spec` fields (strategy.canary.steps and .analysis, paused,
progressDeadline, revisionHistoryLimit) without importing the resource models: the state
machine depends on this small vocabulary only, and the one adapter point,
`policy_from_spec`, maps the spec's camelCase document onto it. The operator and
`routeway serve` call it with `route.spec.model_dump(by_alias=True, mode="json")`, so the
resource models can evolve (defaults, CEL rules, descriptions) without touching the machine.

Validation here repeats the spec's rules (steps non-empty, setWeight 1-100 and
non-decreasing, durations of at least 1s, at least one metric, each metric with a limit) so a
policy the machine runs is always a sensible one, whoever built it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, cast

from routeway.durations import parse_duration

MetricName = Literal["errorRate", "latencyP95", "latencyP50", "ttftP95", "ttftP50"]
METRIC_NAMES: tuple[MetricName, ...] = ("errorRate", "latencyP95", "latencyP50", "ttftP95", "ttftP50")
OnInconclusive = Literal["Pause", "Fail", "Continue"]
MIN_DURATION = 1.0  # seconds: pauses and intervals shorter than this are refused
DEFAULT_REVISION_HISTORY_LIMIT = 10
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SetWeight:
    """Send `percent` % of the route's traffic to the canary arm; completes at once."""

    percent: int

    def __post_init__(self) -> None:
        if not 1 <= self.percent <= 100:
            raise ValueError(f"setWeight must be 1-100, not {self.percent}")


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait `duration` seconds, or with None until a manual promote."""

    duration: float | None = None

    def __post_init__(self) -> None:
        if self.duration is not None and self.duration < MIN_DURATION:
            raise ValueError(f"pause duration must be at least 1s, not {self.duration}s")


Step: TypeAlias = SetWeight | Pause


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """One limit on one metric: an absolute `max` (a rate, or seconds for latencies), a
    `max_ratio_to_stable` (canary value / stable value over the same window), or both."""

    name: MetricName
    max: float | None = None
    max_ratio_to_stable: float | None = None

    def __post_init__(self) -> None:
        if self.name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {self.name!r}: use one of {', '.join(METRIC_NAMES)}")
        if self.max is None and self.max_ratio_to_stable is None:
            raise ValueError(f"metric {self.name} needs max, maxRatioToStable or both")
        for value in (self.max, self.max_ratio_to_stable):
            if value is not None and value < 0:
                raise ValueError(f"metric {self.name}: limits must not be negative")


@dataclass(frozen=True, slots=True)
class Analysis:
    interval: float  # seconds between checks
    window: float  # seconds of traffic each check looks at
    metrics: tuple[MetricCheck, ...]
    min_requests: int = 100
    failure_limit: int = 0  # failed checks tolerated; one more rolls back
    on_inconclusive: OnInconclusive = "Pause"

    def __post_init__(self) -> None:
        if self.interval < MIN_DURATION or self.window < MIN_DURATION:
            raise ValueError("analysis interval and window must be at least 1s")
        if not self.metrics:
            raise ValueError("analysis needs at least one metric")
        if self.min_requests < 0 or self.failure_limit < 0:
            raise ValueError("minRequests and failureLimit must not be negative")
        if self.on_inconclusive not in ("Pause", "Fail", "Continue"):
            raise ValueError(f"onInconclusive must be Pause, Fail or Continue, not {self.on_inconclusive!r}")


@dataclass(frozen=True, slots=True)
class Canary:
    steps: tuple[Step, ...]
    analysis: Analysis | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("canary steps must not be empty")
        weights = [s.percent for s in self.steps if isinstance(s, SetWeight)]
        if any(b < a for a, b in itertools.pairwise(weights)):
            raise ValueError(f"setWeight steps must not decrease: {weights}")


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """Everything in a route's spec that says *how* a new revision is rolled out (none of it is
    part of the revision: editing the policy never starts a rollout)."""

    canary: Canary | None = None  # None: a new revision applies at once
    paused: bool = False  # freezes a rollout where it stands
    progress_deadline: float | None = None  # seconds of progress (paused time excluded)
    revision_history_limit: int = DEFAULT_REVISION_HISTORY_LIMIT

    def __post_init__(self) -> None:
        if self.revision_history_limit < 0:
            raise ValueError("revisionHistoryLimit must not be negative")
        if self.progress_deadline is not None and self.progress_deadline < MIN_DURATION:
            raise ValueError("progressDeadline must be at least 1s")

    @property
    def analysis(self) -> Analysis | None:
        return self.canary.analysis if self.canary else None


def policy_from_spec(spec: Mapping[str, Any]) -> RolloutPolicy:
    """The adapter point: a ModelRoute spec document (camelCase, durations as strings such as
    `30s`, as `model_dump(by_alias=True, mode="json")` gives it) → a RolloutPolicy.

    Raises ValueError naming the field on anything the pinned spec does not allow. A field set
    to null is a field left out (pydantic's dump writes unset optional fields as null).
    """
    spec = _without_nulls(spec)
    strategy = spec.get("strategy") or {}
    canary_doc = strategy.get("canary")
    deadline = spec.get("progressDeadline")
    limit = spec.get("revisionHistoryLimit")
    canary = _at("spec.strategy", _canary, canary_doc) if canary_doc else None
    return _at(
        "spec",
        lambda _: RolloutPolicy(
            canary=canary,
            paused=bool(spec.get("paused") or False),
            progress_deadline=_seconds(deadline, "progressDeadline") if deadline is not None else None,
            revision_history_limit=DEFAULT_REVISION_HISTORY_LIMIT if limit is None else int(limit),
        ),
        None,
    )


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(item) for item in value]
    return value


def _at(path: str, build: Callable[[Any], _T], doc: Any) -> _T:
    """Run `build(doc)`; a ValueError (or a wrongly typed field's error) inside names `path`,
    nested calls joining their paths: `spec.strategy.canary.steps[1]: setWeight must be …`."""
    try:
        return build(doc)
    except _Located as exc:
        raise _Located(f"{path}.{exc.path}", exc.message) from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _Located(path, str(exc)) from exc


class _Located(ValueError):
    """A ValueError that knows which field it is about."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _canary(doc: Mapping[str, Any]) -> Canary:
    steps = tuple(_at(f"canary.steps[{i}]", _step, s) for i, s in enumerate(doc.get("steps") or ()))
    analysis_doc = doc.get("analysis")
    analysis = _at("canary.analysis", _analysis, analysis_doc) if analysis_doc else None
    return _at("canary", lambda _: Canary(steps, analysis), None)


def _step(doc: Mapping[str, Any]) -> Step:
    if "setWeight" in doc and "pause" in doc:
        raise ValueError("a step is either setWeight or pause, not both")
    if "setWeight" in doc:
        return SetWeight(int(doc["setWeight"]))
    if "pause" in doc:
        duration = (doc["pause"] or {}).get("duration")
        return Pause(_seconds(duration, "pause.duration") if duration is not None else None)
    raise ValueError("a step needs setWeight or pause")


def _analysis(doc: Mapping[str, Any]) -> Analysis:
    metrics = tuple(_at(f"metrics[{i}]", _metric, m) for i, m in enumerate(doc.get("metrics") or ()))
    kwargs: dict[str, Any] = {}
    if doc.get("minRequests") is not None:
        kwargs["min_requests"] = int(doc["minRequests"])
    if doc.get("failureLimit") is not None:
        kwargs["failure_limit"] = int(doc["failureLimit"])
    if doc.get("onInconclusive") is not None:
        kwargs["on_inconclusive"] = doc["onInconclusive"]
    return Analysis(
        interval=_seconds(doc.get("interval", "30s"), "interval"),
        window=_seconds(doc.get("window", "5m"), "window"),
        metrics=metrics,
        **kwargs,
    )


def _metric(doc: Mapping[str, Any]) -> MetricCheck:
    name = doc.get("name")
    limit = doc.get("max")
    ratio = doc.get("maxRatioToStable")
    if limit is not None and name != "errorRate":
        limit = _seconds(limit, "max")  # latencies: a duration, or a number of seconds
    return MetricCheck(
        name=cast(MetricName, name),  # checked by MetricCheck itself
        max=float(limit) if limit is not None else None,
        max_ratio_to_stable=float(ratio) if ratio is not None else None,
    )


def _seconds(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{path}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
