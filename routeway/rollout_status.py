"""A route's rollout as a prerequisite of its Ready condition (pure, like routeway.status).

The rule (issue 12, pinned): while a rollout is Progressing or Paused the route is not Ready
and Reconciling says why (`RolloutProgressing` / `RolloutPaused`); after a rollback it is
Stalled with reason `RolledBack` and the rollback's reason, which carries the failing metric
and its numbers; Stable is Ready. So `kubectl wait --for=condition=Ready` waits through the
whole rollout, and a rolled-back one ends the wait only by its timeout.

Why every rollback stalls, a manual abort included: the spec asks for a revision that is not
being served, and only a person (a new spec, a Git revert, a retry) changes that.
"""

from __future__ import annotations

from routeway.rollout.state import RolloutState
from routeway.rollout.strategy import RolloutPolicy, SetWeight
from routeway.status import (
    REASON_ROLLED_BACK,
    REASON_ROLLOUT_PAUSED,
    REASON_ROLLOUT_PROGRESSING,
    ROLLOUT,
    Condition,
)


def rollout_condition(state: RolloutState, policy: RolloutPolicy) -> Condition:
    """The rollout prerequisite of Ready for `state` (True only when Stable)."""
    if state.phase == "Stable":
        return Condition(ROLLOUT, "True", "Stable", f"revision {state.stable.hash} is stable")
    if state.phase == "RolledBack":
        canary = state.canary.hash if state.canary else "?"
        return Condition(
            ROLLOUT,
            "False",
            REASON_ROLLED_BACK,
            f"revision {canary} rolled back to {state.stable.hash}: {state.message}",
        )
    where = progress(state, policy)
    if state.phase == "Paused":
        why = f": {state.message}" if state.message else ""
        return Condition(ROLLOUT, "False", REASON_ROLLOUT_PAUSED, f"paused {where}{why}")
    return Condition(ROLLOUT, "False", REASON_ROLLOUT_PROGRESSING, f"progressing {where}")


def progress(state: RolloutState, policy: RolloutPolicy) -> str:
    """Where a rollout stands, for people: `revision X at 10% (step 2/4)`."""
    steps = policy.canary.steps if policy.canary else ()
    canary = state.canary.hash if state.canary else "?"
    step = min(state.step_index + 1, len(steps)) if steps else 0
    final = max((s.percent for s in steps if isinstance(s, SetWeight)), default=100)
    return f"revision {canary} at {state.canary_weight}% of {final}% (step {step}/{len(steps)})"
