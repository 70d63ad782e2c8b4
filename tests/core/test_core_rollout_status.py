"""A route's rollout as a prerequisite of Ready (routeway.rollout_status), through the same
`route_status` the operator writes: Stable is Ready; Progressing and Paused are Ready=False
with Reconciling=True (RolloutProgressing / RolloutPaused); RolledBack is Stalled=True with
the rollback's numbers; a failing translation condition still explains Ready first. And
`status_changed` reads a key written as null as absent at any depth (a merge patch deletes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from routeway.proxyconfig import RouteConfig
from routeway.rollout.revision import RevisionRef
from routeway.rollout.state import RolloutState
from routeway.rollout.strategy import Canary, Pause, RolloutPolicy, SetWeight
from routeway.rollout_status import rollout_condition
from routeway.status import Condition, Outcome, programmed, route_status, status_changed, summarize

POLICY = RolloutPolicy(canary=Canary((SetWeight(10), Pause(), SetWeight(50), Pause(60.0))))
STABLE = RolloutState("Stable", RevisionRef("aaaa"), "aaaa")
PROGRESSING = replace(
    STABLE, phase="Progressing", desired="bbbb", canary=RevisionRef("bbbb"), step_index=1, canary_weight=10
)
PAUSED = replace(PROGRESSING, phase="Paused", message="step 2/4: waiting for promote")
ROLLED_BACK = replace(
    PROGRESSING,
    phase="RolledBack",
    message="analysis check 1 failed (failureLimit 0): fail: errorRate 0.5, max 0.02 (stable 0): fail",
)


@dataclass(frozen=True)
class Route:
    generation: int | None = 2
    status: dict[str, Any] = field(default_factory=dict)


def trio(state: RolloutState, accepted: bool = True) -> dict[str, tuple[str, str, str]]:
    conditions = [
        Condition("Accepted", "True", "Accepted")
        if accepted
        else Condition("Accepted", "False", "Invalid", "bad"),
        Condition("ResolvedRefs", "True", "ResolvedRefs"),
    ]
    rendered = RouteConfig.model_validate(
        {
            "id": "default/chat",
            "namespace": "default",
            "name": "chat",
            "model": "chat",
            "generation": 2,
            "targets": [{"backend": "default/v1", "model": "m", "weight": 1}],
            "retries": {"attempts": 1},
        }
    )
    doc = route_status(
        Route(),
        conditions,
        ("default", "gw"),
        rendered,
        Outcome("r1", programmed("r1", "is applied")),
        "2026-01-01T00:00:00Z",
        rollout=rollout_condition(state, POLICY),
    )
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in doc["conditions"]}


@pytest.mark.parametrize(
    ("state", "ready", "reconciling", "stalled", "reason"),
    [
        (PROGRESSING, "False", "True", "False", "RolloutProgressing"),
        (PAUSED, "False", "True", "False", "RolloutPaused"),
        (ROLLED_BACK, "False", "False", "True", "RolledBack"),
    ],
)
def test_a_rollout_holds_ready_back(
    state: RolloutState, ready: str, reconciling: str, stalled: str, reason: str
) -> None:
    condition = rollout_condition(state, POLICY)
    assert (condition.status, condition.reason) == ("False", reason)
    rollout = Condition("Rollout", "False", reason, condition.message)
    got = {c.type: c for c in summarize([Condition("Accepted", "True", "Accepted"), rollout])}
    assert (got["Ready"].status, got["Reconciling"].status, got["Stalled"].status) == (
        ready,
        reconciling,
        stalled,
    )
    assert got["Ready"].reason == reason


def test_messages_carry_the_step_and_the_numbers() -> None:
    assert (
        rollout_condition(PROGRESSING, POLICY).message == "progressing revision bbbb at 10% of 50% (step 2/4)"
    )
    assert "waiting for promote" in rollout_condition(PAUSED, POLICY).message
    rolled_back = rollout_condition(ROLLED_BACK, POLICY).message
    assert "bbbb rolled back to aaaa" in rolled_back and "errorRate 0.5, max 0.02" in rolled_back
    assert rollout_condition(STABLE, POLICY).status == "True"


def test_route_status_lists_no_rollout_condition_and_translation_comes_first() -> None:
    stalled = trio(ROLLED_BACK)
    assert "Rollout" not in stalled
    assert (
        stalled["Stalled"][:2] == ("True", "RolledBack") and "Rollout: revision bbbb" in stalled["Stalled"][2]
    )
    assert trio(STABLE)["Programmed"][0] == "True"  # the rollout never touches Programmed
    invalid = trio(PROGRESSING, accepted=False)
    assert invalid["Ready"][1] == "Invalid"


def test_status_changed_reads_null_as_absent_at_any_depth() -> None:
    written = {
        "rollout": {
            "phase": "Stable",
            "canaryRevision": None,
            "analysis": [{"stable": None, "metric": "errorRate"}],
        }
    }
    on_server = {"rollout": {"phase": "Stable", "analysis": [{"metric": "errorRate"}]}}
    assert not status_changed(on_server, written)
    assert status_changed(on_server, {"rollout": {"phase": "Paused"}})
