"""The rollout state machine under a fake clock: every transition the issue pins.

Matrix (each scenario a table of (time, inputs) → (phase, step index, canary weight, canary)):
first sight is Stable; without a strategy a change applies at once and is recorded; the
pinned steps walk (setWeight, timed pause, pause {} → Paused, promote → Stable); analysis
every interval during the whole rollout, Paused included (a due check without observations:
test_core_rollout_unobserved); failures beyond failureLimit roll
back (failures counted over the rollout, a pass between does not reset them); each
onInconclusive (Pause, Fail, Continue); progressDeadline (paused time excluded, a late step
does not complete past it); spec.paused freezes steps, checks and timers; a new spec
supersedes the canary and starts again from stable; a Git revert to stable is Stable at once
(from Progressing, Paused, RolledBack); RolledBack stays until the spec changes; a ModelBackend
edit starts a rollout; the strategy removed mid-rollout promotes; history pruning keeps the
stable revision; wake-up times and the analysis window.

Every step also checks, in `Driver.at`, that the state survives its status document and that
stepping twice with the same inputs changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_rollout import (
    BAD,
    BASE_OBJECTS,
    GOOD,
    THIN,
    Driver,
    act,
    analysis_spec,
    chat,
    mb,
    policy,
    rev,
    revision_of,
)

from routeway.rollout import analysis_due, analysis_window, policy_from_spec, wake_at

R1, R2, R3 = rev("r1"), rev("r2"), rev("r3")
NO_STRATEGY = policy_from_spec({})
TIMED = [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {"duration": "20m"}}]

Row = tuple[float, dict[str, Any], tuple[str, int, int, str | None]]


def run(driver: Driver, rows: list[Row]) -> None:
    for t, inputs, expected in rows:
        driver.at(t, **inputs)
        assert driver.summary() == expected, f"at t={t}: {driver.summary()} != {expected}"


def test_first_sight_is_stable_with_its_revision() -> None:
    d = Driver(policy())
    assert d.summary() == ("Stable", 0, 0, None)
    assert d.state.stable == R1 and d.state.desired == "r1"
    assert [(e.revision.hash, e.outcome, e.reason) for e in d.state.history] == [
        ("r1", "promoted", "initial revision")
    ]
    assert wake_at(d.state, d.policy) is None


def test_without_a_strategy_a_change_applies_at_once_and_is_recorded() -> None:
    d = Driver(NO_STRATEGY)
    run(d, [(10, {"desired": R2}, ("Stable", 0, 0, None))])
    assert d.state.stable == R2
    assert [(e.revision.hash, e.outcome) for e in d.state.history] == [("r2", "promoted"), ("r1", "promoted")]
    assert d.reasons() == ["Promoted"]


def test_the_pinned_steps_walk_to_stable() -> None:
    d = Driver(policy())
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),
            (299, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),
            (300, {"observations": GOOD}, ("Paused", 3, 50, "r2")),  # 5m over, setWeight 50, pause {}
            (330, {"observations": GOOD}, ("Paused", 3, 50, "r2")),  # still judged while paused
            (9999, {"observations": GOOD}, ("Paused", 3, 50, "r2")),  # waits for a person
            (10000, {"actions": act("promote", "go")}, ("Stable", 0, 0, None)),
        ],
    )
    assert d.state.stable == R2
    assert d.reasons() == [
        "RolloutStarted",
        "StepAdvanced",
        "StepAdvanced",
        "StepAdvanced",
        "RolloutPaused",
        "StepAdvanced",
        "Promoted",
    ]
    assert "last analysis pass" in d.events[-1].message
    assert [(e.revision.hash, e.outcome) for e in d.state.history] == [("r2", "promoted"), ("r1", "promoted")]


def test_analysis_runs_every_interval() -> None:
    d = Driver(policy())
    d.at(0, desired=R2)
    assert d.state.next_check_at == 30 and not analysis_due(d.state, d.policy, 29)
    assert d.at(29).check is None  # not due yet: no check, with or without observations
    assert analysis_due(d.state, d.policy, 30) and analysis_due(d.state, d.policy, 31)
    decision = d.at(31, observations=GOOD)
    assert decision.check is not None and decision.check.verdict == "pass"
    assert d.state.next_check_at == 61 and d.state.last_check_at == 31
    assert d.state.last_check == decision.check
    assert [m.metric for m in decision.check.metrics] == ["errorRate", "latencyP95", "ttftP95"]
    assert analysis_window(d.state, d.policy, 31) == (0, 31)  # never before the rollout began
    assert analysis_window(d.state, d.policy, 1000) == (700, 1000)


def test_a_failed_check_rolls_back_with_its_numbers_and_stays_rolled_back() -> None:
    d = Driver(policy())
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
            (5000, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
        ],
    )
    assert d.state.stable == R1 and d.state.serving_canary is None
    rolled_back = d.events[-1]
    assert rolled_back.reason == "RolledBack" and rolled_back.warning
    assert "errorRate 0.3" in rolled_back.message and "max 0.02" in rolled_back.message
    assert "1000 canary / 1000 stable requests" in rolled_back.message
    assert d.state.message.startswith("analysis check 1 failed (failureLimit 0)")
    entry = d.state.history[0]
    assert (entry.revision.hash, entry.outcome) == ("r2", "rolledBack") and "errorRate 0.3" in entry.reason
    assert wake_at(d.state, d.policy) is None


def test_failures_beyond_the_limit_count_over_the_whole_rollout() -> None:
    d = Driver(policy(analysis_changes={"failureLimit": 2}))
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": BAD}, ("Progressing", 1, 10, "r2")),
            (60, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),
            (90, {"observations": BAD}, ("Progressing", 1, 10, "r2")),
            (120, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
        ],
    )
    assert d.reasons().count("AnalysisFailed") == 2
    assert "check 3 failed (failureLimit 2)" in d.state.message


@pytest.mark.parametrize(
    ("on_inconclusive", "rows"),
    [
        (
            "Pause",
            [(30, {"observations": THIN}, ("Paused", 1, 10, "r2")), (9999, {}, ("Paused", 1, 10, "r2"))],
        ),
        ("Fail", [(30, {"observations": THIN}, ("RolledBack", 0, 0, "r2"))]),
        (
            "Continue",
            [
                (30, {"observations": THIN}, ("Progressing", 1, 10, "r2")),
                (300, {"observations": THIN}, ("Progressing", 3, 50, "r2")),
            ],
        ),
    ],
)
def test_each_on_inconclusive(on_inconclusive: str, rows: list[Row]) -> None:
    d = Driver(policy(steps=TIMED, analysis_changes={"onInconclusive": on_inconclusive}))
    run(d, [(0, {"desired": R2}, ("Progressing", 1, 10, "r2")), *rows])
    if on_inconclusive == "Pause":
        assert d.state.paused_by == "inconclusive" and "fewer than minRequests 100" in d.state.message
    if on_inconclusive == "Fail":
        assert "fewer than minRequests" in d.state.message


def test_paused_on_inconclusive_keeps_judging_and_resumes_by_promote() -> None:
    d = Driver(policy(steps=TIMED))
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": THIN}, ("Paused", 1, 10, "r2")),
            (60, {"observations": GOOD}, ("Paused", 1, 10, "r2")),  # a pass does not resume by itself
            (70, {"actions": act("promote", "t")}, ("Progressing", 3, 50, "r2")),  # past the 5m pause
        ],
    )
    d2 = Driver(policy(steps=TIMED))
    run(
        d2,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": THIN}, ("Paused", 1, 10, "r2")),
            (60, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
        ],
    )


def test_the_progress_deadline_rolls_back() -> None:
    d = Driver(policy(steps=TIMED, analysis=None, progressDeadline="10m"))
    d.at(0, desired=R2)
    assert wake_at(d.state, d.policy) == 300  # the pause ends before the deadline
    d.at(300)
    assert wake_at(d.state, d.policy) == 600  # the deadline comes before the 20m pause ends
    run(d, [(599, {}, ("Progressing", 3, 50, "r2")), (600, {}, ("RolledBack", 0, 0, "r2"))])
    assert d.state.message == "progressDeadline 600s exceeded at step 4 with the canary at 50%"
    assert d.events[-1].reason == "RolledBack"


def test_a_late_step_does_not_complete_past_the_deadline() -> None:
    d = Driver(policy(steps=TIMED, analysis=None, progressDeadline="10m"))
    d.at(0, desired=R2)
    run(d, [(5000, {}, ("RolledBack", 0, 0, "r2"))])  # the 20m pause would have ended at 1500
    assert "step 4" in d.state.message


@pytest.mark.parametrize(("last_pause", "expected"), [("8m", "Stable"), ("12m", "RolledBack")])
def test_time_spent_paused_does_not_count_against_the_deadline(last_pause: str, expected: str) -> None:
    steps = [{"setWeight": 10}, {"pause": {}}, {"pause": {"duration": last_pause}}]
    d = Driver(policy(steps=steps, analysis=None, progressDeadline="10m"))
    run(
        d,
        [
            (0, {"desired": R2}, ("Paused", 1, 10, "r2")),
            (3600, {"actions": act("promote", "t")}, ("Progressing", 2, 10, "r2")),
        ],
    )
    assert d.state.deadline_at == 4200
    d.at(4200)
    assert d.state.phase == expected


def test_spec_paused_freezes_steps_checks_and_timers() -> None:
    d = Driver(policy())
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (20, {"pol": policy(paused=True)}, ("Paused", 1, 10, "r2")),
            (200, {"observations": BAD}, ("Paused", 1, 10, "r2")),  # no check while frozen
            (250, {"actions": act("promote", "p")}, ("Paused", 1, 10, "r2")),  # refused
            (1000, {"pol": policy(paused=False)}, ("Progressing", 1, 10, "r2")),
        ],
    )
    assert "ActionRefused" in d.reasons()
    assert d.state.next_check_at == 30 + 980  # every timer moved by the frozen span
    assert wake_at(d.state, d.policy) == d.state.next_check_at
    assert d.state.deadline_at == 1800 + 980  # frozen time does not count either
    run(
        d,
        [
            (1279, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),  # the 5m pause resumes
            (1280, {"observations": GOOD}, ("Paused", 3, 50, "r2")),
        ],
    )


def test_abort_works_while_frozen() -> None:
    d = Driver(policy(paused=True))
    run(
        d,
        [
            (0, {"desired": R2}, ("Paused", 0, 0, "r2")),  # a new rollout starts frozen at step 0
            (10, {"actions": act("abort", "stop")}, ("RolledBack", 0, 0, "r2")),
        ],
    )


def test_a_rollout_started_while_frozen_begins_when_unfrozen() -> None:
    d = Driver(policy(paused=True))
    assert wake_at(d.state, d.policy) is None
    run(
        d,
        [
            (0, {"desired": R2}, ("Paused", 0, 0, "r2")),
            (50, {"pol": policy(paused=False)}, ("Progressing", 1, 10, "r2")),
        ],
    )


def test_a_new_spec_during_a_rollout_supersedes_and_starts_from_stable() -> None:
    d = Driver(policy(analysis_changes={"failureLimit": 3}))
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": BAD}, ("Progressing", 1, 10, "r2")),
            (100, {"desired": R3}, ("Progressing", 1, 10, "r3")),
            (399, {"observations": GOOD}, ("Progressing", 1, 10, "r3")),  # its own 5m pause, from 100
            (400, {"observations": GOOD}, ("Paused", 3, 50, "r3")),
        ],
    )
    assert d.state.stable == R1
    entry = d.state.entry("r2")
    assert entry is not None and entry.outcome == "superseded" and "revision r3" in entry.reason
    assert d.reasons()[-6:-3] == ["Superseded", "RolloutStarted", "StepAdvanced"]


@pytest.mark.parametrize(
    "before",
    [
        [(0, {"desired": R2}, ("Progressing", 1, 10, "r2"))],
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (300, {"observations": GOOD}, ("Paused", 3, 50, "r2")),
        ],
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
        ],
    ],
    ids=["from Progressing", "from Paused", "from RolledBack"],
)
def test_a_git_revert_to_stable_is_stable_at_once(before: list[Row]) -> None:
    d = Driver(policy())
    run(d, [*before, (400, {"desired": R1}, ("Stable", 0, 0, None))])
    assert d.state.stable == R1 and d.events[-1].reason == "Reverted"
    outcome = d.state.entry("r2")
    assert outcome is not None
    assert outcome.outcome == ("rolledBack" if before[-1][2][0] == "RolledBack" else "superseded")


def test_rolled_back_stays_until_the_spec_changes() -> None:
    d = Driver(policy())
    run(
        d,
        [
            (0, {"desired": R2}, ("Progressing", 1, 10, "r2")),
            (30, {"observations": BAD}, ("RolledBack", 0, 0, "r2")),
            (99999, {}, ("RolledBack", 0, 0, "r2")),
            (100000, {"desired": R3}, ("Progressing", 1, 10, "r3")),
        ],
    )
    entry = d.state.entry("r2")
    assert entry is not None and entry.outcome == "rolledBack"  # not superseded: it was over


def test_a_model_backend_edit_is_a_new_revision_and_rolls_out() -> None:
    before = revision_of(BASE_OBJECTS)
    after = revision_of([mb("a", url="http://llama-v2:8000/v1"), mb("b"), chat([("a", 90), ("b", 10)])])
    d = Driver(policy(), desired=before.ref)
    d.at(0, desired=after.ref)
    assert d.summary() == ("Progressing", 1, 10, after.hash)
    assert d.state.stable == before.ref and d.state.canary == after.ref


@pytest.mark.parametrize(("until", "phase"), [(0, "Progressing"), (300, "Paused")])
def test_removing_the_strategy_mid_rollout_promotes(until: float, phase: str) -> None:
    d = Driver(policy())
    d.at(0, desired=R2)
    d.at(until, observations=GOOD)
    assert d.state.phase == phase and d.state.paused_by in (None, "step")
    run(d, [(until + 10, {"pol": NO_STRATEGY}, ("Stable", 0, 0, None))])
    assert d.state.stable == R2 and d.state.history[0].reason == "the canary strategy was removed"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(2, ["r5", "r1"]), (3, ["r5", "r4", "r1"]), (0, ["r5", "r1"]), (10, ["r5", "r4", "r3", "r2", "r1"])],
)
def test_history_is_pruned_but_keeps_the_stable_and_the_rolled_back_canary(
    limit: int, expected: list[str]
) -> None:
    """Whatever the limit, the stable revision and the canary (here rolled back, kept for a
    retry) stay: an adapter prunes its stored revisions by this history."""
    d = Driver(policy(revisionHistoryLimit=limit))
    for i, name in enumerate(["r2", "r3", "r4", "r5"]):
        d.at(100 * i, desired=rev(name), actions=act("abort", f"a{i}"))
    assert d.state.stable == R1 and d.state.phase == "RolledBack"
    assert [e.revision.hash for e in d.state.history] == expected


def test_history_without_strategy_keeps_the_newest() -> None:
    d = Driver(policy_from_spec({"revisionHistoryLimit": 2}))
    for i, name in enumerate(["r2", "r3", "r4", "r5"]):
        d.at(i, desired=rev(name))
    assert [e.revision.hash for e in d.state.history] == ["r5", "r4"]


def test_analysis_added_or_removed_mid_rollout() -> None:
    d = Driver(policy(analysis=None, steps=TIMED))
    d.at(0, desired=R2)
    assert d.state.next_check_at is None
    d.at(10, pol=policy(steps=TIMED, analysis=analysis_spec(interval="1m")))
    assert d.state.next_check_at == 70
    d.at(20, pol=policy(steps=TIMED, analysis=None))
    assert d.state.next_check_at is None and wake_at(d.state, d.policy) == 300


def test_a_canary_without_a_ready_target_waits_and_the_deadline_still_runs() -> None:
    """It gets no traffic while it has no ready target: no weight is set, no pause runs down and
    nothing is promoted unseen; never ready, the deadline rolls it back."""
    d = Driver(policy(progressDeadline="30m"))
    steps = [{"setWeight": 10}, {"pause": {"duration": "5m"}}]
    d.at(0, desired=R2, pol=policy(progressDeadline="30m", steps=steps), canary_ready=False)
    run(d, [(400, {"canary_ready": False, "observations": GOOD}, ("Progressing", 0, 0, "r2"))])
    assert d.state.message == "waiting for a ready canary target"
    run(
        d,
        [
            # ready: the weight is set, and the 5m count from when it was last seen not ready
            (500, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),
            (699, {"observations": GOOD}, ("Progressing", 1, 10, "r2")),
            (700, {"observations": GOOD}, ("Stable", 0, 0, None)),
        ],
    )
    never = Driver(policy(progressDeadline="30m", steps=steps))
    never.at(0, desired=R2, canary_ready=False)
    run(never, [(1800, {"canary_ready": False}, ("RolledBack", 0, 0, "r2"))])


def test_actions_given_together_apply_safest_first_whatever_their_order() -> None:
    for actions in (
        act("abort", "a") + act("promote-full", "b"),
        act("promote-full", "b") + act("abort", "a"),
    ):
        d = Driver(policy())
        d.at(0, desired=R2)
        d.at(10, actions=actions)
        assert d.state.phase == "RolledBack", actions
