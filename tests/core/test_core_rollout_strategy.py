"""The rollout policy: the adapter point from the pinned spec document, and its validation.

Matrix: the issue's pinned example maps field by field; defaults when fields are left out;
latency limits as durations or numbers; every rule the spec pins is refused with the field's
path (steps non-empty, setWeight 1-100 and non-decreasing, pause and interval >= 1s, at least
one metric, a limit per metric, a known metric name and onInconclusive value).
"""

from __future__ import annotations

from typing import Any

import pytest
from core_rollout import PINNED_SPEC

from routeway.rollout import Analysis, Canary, MetricCheck, Pause, RolloutPolicy, SetWeight, policy_from_spec


def test_the_pinned_example_maps_field_by_field() -> None:
    assert policy_from_spec(PINNED_SPEC) == RolloutPolicy(
        canary=Canary(
            steps=(SetWeight(10), Pause(300.0), SetWeight(50), Pause(None)),
            analysis=Analysis(
                interval=30.0,
                window=300.0,
                min_requests=100,
                failure_limit=0,
                on_inconclusive="Pause",
                metrics=(
                    MetricCheck("errorRate", max=0.02),
                    MetricCheck("latencyP95", max=20.0),
                    MetricCheck("ttftP95", max_ratio_to_stable=1.3),
                ),
            ),
        ),
        paused=False,
        progress_deadline=1800.0,
        revision_history_limit=10,
    )


def test_defaults() -> None:
    assert policy_from_spec({}) == RolloutPolicy(None, False, None, 10)
    minimal = policy_from_spec(
        {
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 5}],
                    "analysis": {"metrics": [{"name": "errorRate", "max": 0.1}]},
                }
            }
        }
    )
    assert minimal.analysis == Analysis(30.0, 300.0, (MetricCheck("errorRate", 0.1),), 100, 0, "Pause")
    both = policy_from_spec(
        {
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 5}],
                    "analysis": {"metrics": [{"name": "ttftP50", "max": 2, "maxRatioToStable": 1.5}]},
                }
            }
        }
    )
    assert both.analysis is not None and both.analysis.metrics == (MetricCheck("ttftP50", 2.0, 1.5),)


def _canary(**canary: Any) -> dict[str, Any]:
    return {"strategy": {"canary": {"steps": [{"setWeight": 10}], **canary}}}


METRIC = {"name": "errorRate", "max": 0.02}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_canary(steps=[]), "spec.strategy.canary: canary steps must not be empty"),
        (_canary(steps=[{"setWeight": 0}]), r"spec.strategy.canary.steps\[0\]: setWeight must be 1-100"),
        (_canary(steps=[{"setWeight": 101}]), r"steps\[0\]: setWeight must be 1-100"),
        (_canary(steps=[{"setWeight": 50}, {"setWeight": 10}]), "must not decrease"),
        (
            _canary(steps=[{"pause": {"duration": "500ms"}}]),
            r"steps\[0\]: pause duration must be at least 1s",
        ),
        (_canary(steps=[{"pause": {"duration": "soon"}}]), r"steps\[0\]: pause.duration: invalid duration"),
        (_canary(steps=[{"setWeight": 1, "pause": {}}]), "either setWeight or pause"),
        (_canary(steps=[{}]), "needs setWeight or pause"),
        (
            _canary(analysis={"metrics": []}),
            "spec.strategy.canary.analysis: analysis needs at least one metric",
        ),
        (_canary(analysis={"metrics": [{"name": "errorRate"}]}), r"metrics\[0\]: metric errorRate needs max"),
        (_canary(analysis={"metrics": [{"name": "p99", "max": 1}]}), "unknown metric 'p99'"),
        (_canary(analysis={"interval": "100ms", "metrics": [METRIC]}), "at least 1s"),
        (_canary(analysis={"onInconclusive": "Shrug", "metrics": [METRIC]}), "onInconclusive"),
        (_canary(analysis={"minRequests": -1, "metrics": [METRIC]}), "must not be negative"),
        ({"progressDeadline": "0s"}, "spec: progressDeadline must be at least 1s"),
        ({"revisionHistoryLimit": -1}, "revisionHistoryLimit must not be negative"),
    ],
)
def test_invalid_policies_name_their_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy_from_spec(spec)


def test_latency_limits_take_a_duration_or_seconds() -> None:
    spec = _canary(
        analysis={"metrics": [{"name": "latencyP95", "max": "1500ms"}, {"name": "latencyP50", "max": 2}]}
    )
    analysis = policy_from_spec(spec).analysis
    assert analysis is not None and [m.max for m in analysis.metrics] == [1.5, 2.0]
