"""The rollout policy read from a real ModelRoute spec: the pydantic models of the pinned spec
(routeway/strategy.py) dumped as the adapters will dump them, through `policy_from_spec`.

Both sides were written apart; this pins that they agree on the pinned example (steps with
unset fields dumped as null, durations as strings, both kinds of `max`) and on the defaults.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from routeway.resources import ModelRoute
from routeway.rollout.strategy import Pause, SetWeight, policy_from_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "canary" / "route.yaml"


def the_route() -> ModelRoute:
    for document in yaml.safe_load_all(EXAMPLE.read_text()):
        if document and document.get("kind") == "ModelRoute":
            return ModelRoute.model_validate(document)
    raise AssertionError(f"no ModelRoute in {EXAMPLE}")


def test_the_pinned_example_becomes_a_policy() -> None:
    spec = the_route().spec.model_dump(by_alias=True, mode="json")
    policy = policy_from_spec(spec)
    assert policy.canary is not None
    steps = policy.canary.steps
    assert [type(step) for step in steps] == [SetWeight, Pause, SetWeight, Pause]
    assert isinstance(steps[0], SetWeight) and steps[0].percent == 10
    assert isinstance(steps[1], Pause) and steps[1].duration == 300.0
    assert isinstance(steps[3], Pause) and steps[3].duration is None
    analysis = policy.analysis
    assert analysis is not None
    checks = {check.name: check for check in analysis.metrics}
    assert checks["errorRate"].max == 0.02
    assert checks["latencyP95"].max == 20.0
    assert checks["ttftP95"].max_ratio_to_stable == 1.3
    assert (analysis.interval, analysis.window, analysis.min_requests) == (30.0, 300.0, 100)
    assert (policy.progress_deadline, policy.revision_history_limit, policy.paused) == (1800.0, 10, False)


def test_a_route_without_strategy_has_no_canary() -> None:
    route = the_route()
    spec = route.spec.model_dump(by_alias=True, mode="json")
    spec["strategy"] = None
    assert policy_from_spec(spec).canary is None
