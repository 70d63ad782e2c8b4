"""A due check without observations: inconclusive, never skipped.

An adapter that fails to gather a window (a proxy pod it cannot reach) must not silently turn
analysis off and let the steps promote an unjudged canary, nor leave the check due so that
`wake_at` is in the past (a hot loop): the check is inconclusive ("no observations"), so
onInconclusive decides, and the next one is an interval later.
"""

from __future__ import annotations

import pytest
from core_rollout import Driver, act, policy, rev

R2 = rev("r2")
TIMED = [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {"duration": "20m"}}]


@pytest.mark.parametrize(
    ("on_inconclusive", "expected"),
    [
        ("Pause", ("Paused", 1, 10, "r2")),
        ("Fail", ("RolledBack", 0, 0, "r2")),
        ("Continue", ("Progressing", 1, 10, "r2")),
    ],
)
def test_a_due_check_without_observations_is_inconclusive(
    on_inconclusive: str, expected: tuple[str, int, int, str | None]
) -> None:
    """An adapter that gathered nothing (a proxy pod it could not reach) must not turn analysis
    off: the check counts as inconclusive, and the next one is an interval later (no hot loop)."""
    d = Driver(policy(steps=TIMED, analysis_changes={"onInconclusive": on_inconclusive}))
    d.at(0, desired=R2)
    decision = d.at(40)
    assert d.summary() == expected
    assert decision.check is not None and decision.check.verdict == "inconclusive"
    assert decision.check.summary() == "inconclusive: no observations"
    assert [m.metric for m in decision.check.metrics] == ["errorRate", "latencyP95", "ttftP95"]
    if on_inconclusive == "Fail":
        assert d.state.message == "analysis check 1 failed (failureLimit 0): inconclusive: no observations"
    else:
        assert d.state.last_check == decision.check and d.state.next_check_at == 70
        wake = decision.wake_at
        assert wake is not None and wake > 40
    if on_inconclusive == "Pause":
        assert d.state.paused_by == "inconclusive"
        assert d.state.message == "analysis inconclusive: no observations; waiting for promote"
    if on_inconclusive == "Continue":  # without data, the steps still move on as configured
        d.at(300)
        assert d.summary() == ("Progressing", 3, 50, "r2")


def test_without_observations_a_rollout_never_promotes_unjudged() -> None:
    d = Driver(policy(steps=TIMED))
    d.at(0, desired=R2)
    for t in (30, 300, 1500, 1799):
        d.at(t)
    assert d.summary() == ("Paused", 1, 10, "r2") and "Promoted" not in d.reasons()
    d.at(1800, actions=act("abort", "stop"))  # a manual action still acts
    assert d.summary() == ("RolledBack", 0, 0, "r2")
