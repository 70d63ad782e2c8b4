"""The rollout state machine: (state, inputs) → new state, events and when to step again.

One pure function, `step`, drives a route's rollout for both adapters (`routeway serve` and
the operator), in the sans-I/O manner of h11: it never reads a clock or a socket; the
adapter feeds it the spec's revision, the policy, the time, the analysis window's
observations and the manual actions, then serves what the state says and posts the events.
Stepping again with the same inputs changes nothing (level-based: a resync is harmless).

Transitions, in the order one step applies them:

| from                  | on                                             | to                                   |
|-----------------------|------------------------------------------------|--------------------------------------|
| (none)                | first sight                                    | Stable (the spec's revision)         |
| any                   | new spec == stable revision (a Git revert)     | Stable at once; a canary superseded  |
| any                   | new spec, no canary strategy                   | Stable with it at once (promoted)    |
| any                   | new spec                                       | Progressing from stable, step 0; a canary in progress superseded |
| Progressing/Paused    | promote                                        | Progressing at the next step         |
| Progressing/Paused    | promote-full                                   | Stable with the canary (promoted)    |
| Progressing/Paused    | abort                                          | RolledBack                           |
| RolledBack            | retry                                          | Progressing: the same canary again   |
| any                   | undo REV (REV in history, restorable)          | Progressing with REV as canary (REV == stable, or no canary strategy: Stable at once) |
| Progressing/Paused    | the canary strategy removed                    | Stable with the canary (promoted)    |
| Progressing/Paused    | spec.paused                                    | Paused, frozen (no steps, analysis, deadline) until unset |
| Progressing/Paused    | analysis fails more than failureLimit times    | RolledBack                           |
| Progressing           | analysis inconclusive, onInconclusive: Pause   | Paused until promote                 |
| Progressing/Paused    | a check due with no observations               | an inconclusive check ("no observations") |
| Progressing/Paused    | a check due, the adapter observing < 1 interval | the check waits one interval, uncounted (`Inputs.observed_from`) |
| Progressing           | setWeight p / timed pause over                 | next step                            |
| Progressing           | pause {}                                       | Paused until promote                 |
| Progressing           | last step done                                 | Stable with the canary (promoted)    |
| Progressing           | progressDeadline passed (paused time excluded) | RolledBack                           |
| Progressing/Paused    | no ready canary target (`Inputs.canary_ready`) | waits: no weight set, no pause runs down, no check; the deadline runs |

Actions given in one step apply safest first (`ACTION_PRECEDENCE`), whatever their order.

An action that does not apply (promote while Stable, retry when nothing was rolled back, undo
to an unknown or unrestorable revision, promote while frozen by spec.paused) is refused with an
`ActionRefused` event and its token is still consumed: a token is handled exactly once, so a
promote left on the route never promotes a later rollout.
"""

from __future__ import annotations

from dataclasses import replace

from routeway.rollout.analysis import judge, unobserved
from routeway.rollout.lifecycle import Lifecycle
from routeway.rollout.revision import RevisionRef
from routeway.rollout.state import (
    Action,
    Decision,
    Inputs,
    RolloutState,
    missing_backends,
    prune,
    record,
    refresh_restorable,
    remember,
)
from routeway.rollout.strategy import Pause, RolloutPolicy, SetWeight

ACTION_PRECEDENCE = {"abort": 0, "undo": 1, "retry": 2, "promote-full": 3, "promote": 4}
"""Actions given together apply in this order, the safest first."""


def initial_state(desired: RevisionRef, now: float) -> RolloutState:
    """A route seen for the first time serves its spec at once: that is the stable revision
    (the manifests found at start-up, the route as it was before the operator knew it)."""
    entry = record((), desired, "promoted", "initial revision", now)
    return RolloutState("Stable", desired, desired.hash, history=entry)


def step(state: RolloutState | None, inputs: Inputs) -> Decision:
    """Advance one route's rollout to `inputs.now`. See the module docstring's table."""
    if state is None:
        state = initial_state(inputs.desired, inputs.now)
    run = _Run(inputs)
    s = replace(state, history=refresh_restorable(state.history, inputs.backends))
    if inputs.desired.hash != s.desired:
        s = run.new_spec(s)
    for action in sorted(inputs.actions, key=lambda a: ACTION_PRECEDENCE.get(a.kind, len(ACTION_PRECEDENCE))):
        s = run.act(s, action)  # in a fixed order: the result never depends on how they were listed
    if s.in_progress and inputs.policy.canary is None:
        s = run.promote(s, "the canary strategy was removed")  # nothing left to step through
    s = run.freeze_or_thaw(s)
    if s.in_progress and s.frozen_at is None:
        if not inputs.canary_ready:
            s = run.wait_for_a_ready_canary(s)
        else:
            s = run.analyse(s)
            s = run.advance(s)
        s = run.check_deadline(s)
    keep = [s.stable.hash] + ([s.canary.hash] if s.canary is not None else [])
    s = replace(s, history=prune(s.history, inputs.policy.revision_history_limit, keep=keep))
    return Decision(s, tuple(run.events), run.check, wake_at(s, inputs.policy))


def analysis_due(state: RolloutState, policy: RolloutPolicy, now: float) -> bool:
    """Whether the next step will run a check: then pass it the window's observations."""
    return (
        policy.analysis is not None
        and state.in_progress
        and state.frozen_at is None
        and state.next_check_at is not None
        and now >= state.next_check_at
    )


def analysis_window(state: RolloutState, policy: RolloutPolicy, now: float) -> tuple[float, float]:
    """The traffic a check at `now` judges: the last `window`, never before this rollout began
    (both arms over the same span, so a ratio to stable compares like with like)."""
    window = policy.analysis.window if policy.analysis else 0.0
    start = now - window
    if state.started_at is not None:
        start = max(start, state.started_at)
    return start, now


def wake_at(state: RolloutState, policy: RolloutPolicy) -> float | None:
    """The earliest time something changes by itself: a check due, a timed pause over, the
    deadline. None when only a new spec or an action can move the route."""
    if not state.in_progress or state.frozen_at is not None:
        return None
    times = []
    if policy.analysis is not None and state.next_check_at is not None:
        times.append(state.next_check_at)
    if state.phase == "Progressing":
        if state.deadline_at is not None:
            times.append(state.deadline_at)
        current = _current_step(state, policy)
        if isinstance(current, Pause) and current.duration is not None and state.step_started_at is not None:
            times.append(state.step_started_at + current.duration)
    return min(times) if times else None


def _current_step(state: RolloutState, policy: RolloutPolicy) -> SetWeight | Pause | None:
    steps = policy.canary.steps if policy.canary else ()
    return steps[state.step_index] if state.step_index < len(steps) else None


class _Run(Lifecycle):
    """One step: the spec, the actions and time passing, in the order `step` applies them."""

    # ------------------------------------------------------------------ spec and actions

    def new_spec(self, s: RolloutState) -> RolloutState:
        desired = self.inputs.desired
        s = replace(s, desired=desired.hash)
        if desired.hash == s.stable.hash:
            if s.canary is None:
                return s
            if s.in_progress:
                s = self.supersede(s, "the spec returned to the stable revision")
            self.emit(
                "Reverted", f"spec returned to stable revision {desired.hash}: all traffic on it at once"
            )
            return self.settle(s, s.stable)
        if s.in_progress and s.canary is not None and desired.hash == s.canary.hash:
            return s  # the spec caught up with the revision being rolled out (after an undo)
        return self.start(s, desired, "spec changed")

    def act(self, s: RolloutState, action: Action) -> RolloutState:
        if not action.token or s.was_handled(action):
            return s  # handled once, never replayed
        s = replace(s, handled=remember(s.handled, action, self.now))
        frozen = self.policy.paused and s.in_progress
        what = f"{action.kind} ({action.token})"
        refusal: str | None = None
        if action.kind in ("promote", "promote-full", "abort") and not s.in_progress:
            refusal = "no rollout in progress"
        elif action.kind in ("promote", "promote-full") and frozen:
            refusal = "the rollout is frozen by spec.paused"
        elif action.kind == "promote":
            s = self.set_weights(self.resume(s))  # a promote ends a wait, never skips a setWeight
            self.emit("StepAdvanced", f"{what}: past step {s.step_index + 1} by hand")
            return replace(s, step_index=s.step_index + 1, step_started_at=self.now)
        elif action.kind == "promote-full":
            return self.promote(s, f"promoted fully by hand ({action.token})")
        elif action.kind == "abort":
            return self.roll_back(s, f"aborted by hand ({action.token})")
        elif action.kind == "retry":
            if s.phase != "RolledBack" or s.canary is None:
                refusal = "no rolled-back revision to retry"
            else:
                refusal = self.unrestorable(s.canary)
                if refusal is None:
                    return self.start(s, s.canary, f"retry by hand ({action.token})")
        else:
            s, refusal = self.undo(s, action)
        if refusal is not None:
            self.emit("ActionRefused", f"{what} refused: {refusal}", warning=True)
        return s

    def undo(self, s: RolloutState, action: Action) -> tuple[RolloutState, str | None]:
        target = action.revision or ""
        why = f"undo to {target} by hand ({action.token})"
        if s.in_progress and s.canary is not None and s.canary.hash == target:
            return s, f"revision {target} is already being rolled out"
        if target == s.stable.hash:
            if not s.in_progress:
                return s, f"revision {target} is already the stable one"
            s = self.supersede(s, why)
            self.emit("Reverted", f"{why}: all traffic on stable revision {target} at once")
            return self.settle(s, s.stable), None
        entry = s.entry(target)
        if entry is None:
            return s, f"revision {target!r} is not in the route's history"
        refusal = self.unrestorable(entry.revision)
        if refusal is None and not entry.restorable and self.inputs.backends is None:
            refusal = f"revision {target} is not restorable: a backend it uses no longer exists"
        if refusal is not None:
            return s, refusal
        return self.start(s, entry.revision, why), None

    def unrestorable(self, revision: RevisionRef) -> str | None:
        gone = missing_backends(revision, self.inputs.backends)
        if gone:
            return (
                f"revision {revision.hash} is not restorable: ModelBackend {', '.join(gone)} no longer exists"
            )
        return None

    def freeze_or_thaw(self, s: RolloutState) -> RolloutState:
        if not s.in_progress:
            return s
        if self.policy.paused and s.frozen_at is None:
            s = replace(s, frozen_at=self.now)
            self.emit("RolloutPaused", "frozen by spec.paused")
            return replace(
                s, phase="Paused", paused_at=s.paused_at or self.now, message="frozen by spec.paused"
            )
        if not self.policy.paused and s.frozen_at is not None:
            span = self.now - s.frozen_at
            s = replace(
                s,
                frozen_at=None,
                step_started_at=s.step_started_at + span if s.step_started_at is not None else None,
                next_check_at=s.next_check_at + span if s.next_check_at is not None else None,
            )
            if s.paused_by is None:
                self.emit("RolloutResumed", "spec.paused unset")
                return self.resume(s)
            return replace(s, message=f"waiting for promote ({s.paused_by})")
        return s

    # ------------------------------------------------------------------ time passing

    def analyse(self, s: RolloutState) -> RolloutState:
        analysis = self.policy.analysis
        if analysis is None:
            return replace(s, next_check_at=None)
        if s.next_check_at is None:
            return replace(s, next_check_at=self.now + analysis.interval)
        if self.now < s.next_check_at:
            return s
        observed_from = self.inputs.observed_from
        if observed_from is not None and observed_from > self.now - analysis.interval:
            # the adapter has read the proxies for less than one interval (a restart): the
            # window's start is unseen, so this check waits one interval, uncounted
            return replace(s, next_check_at=observed_from + analysis.interval)
        if self.inputs.observations is None:  # nothing gathered: inconclusive, never skipped
            check = unobserved(analysis.metrics, analysis, "no observations")
        else:
            check = judge(analysis.metrics, *self.inputs.observations, analysis)
        self.check = check
        s = replace(s, last_check=check, last_check_at=self.now, next_check_at=self.now + analysis.interval)
        inconclusive = check.verdict == "inconclusive"
        if check.verdict == "fail" or (inconclusive and analysis.on_inconclusive == "Fail"):
            failed = s.failed_checks + 1
            s = replace(s, failed_checks=failed)
            counted = f"check {failed} failed (failureLimit {analysis.failure_limit}): {check.summary()}"
            if failed > analysis.failure_limit:
                return self.roll_back(s, f"analysis {counted}")
            self.emit("AnalysisFailed", counted, warning=True)
        elif inconclusive and analysis.on_inconclusive == "Pause" and s.phase == "Progressing":
            return self.pause(s, "inconclusive", f"analysis {check.summary()}; waiting for promote")
        return s

    def wait_for_a_ready_canary(self, s: RolloutState) -> RolloutState:
        """No ready canary target: it gets no traffic, so nothing about it can be judged or
        timed; its current pause and its next check start over once it is ready."""
        analysis = self.policy.analysis
        message = "waiting for a ready canary target"
        return replace(
            s,
            step_started_at=self.now if s.step_started_at is not None else None,
            next_check_at=self.now + analysis.interval if analysis is not None else None,
            message=message if s.phase == "Progressing" else s.message,
        )

    def advance(self, s: RolloutState) -> RolloutState:
        """Run the steps that are due, then promote when none is left."""
        if s.phase != "Progressing":
            return s
        steps = self.policy.canary.steps if self.policy.canary else ()
        while s.step_index < len(steps):
            s = self.set_weights(s)
            current = _current_step(s, self.policy)
            if current is None:
                break
            assert isinstance(current, Pause)
            where = f"step {s.step_index + 1}/{len(steps)}"
            if current.duration is None:
                return self.pause(s, "step", f"{where}: waiting for promote")
            assert s.step_started_at is not None
            ends = s.step_started_at + current.duration
            if ends > self.now or (s.deadline_at is not None and ends >= s.deadline_at):
                return s
            s = replace(s, step_index=s.step_index + 1, step_started_at=ends)
            self.emit("StepAdvanced", f"{where}: pause of {current.duration:g}s over{self.numbers(s)}")
        return self.promote(s, f"all {len(steps)} steps done")

    def set_weights(self, s: RolloutState) -> RolloutState:
        """Apply the setWeight steps from the current one on: they complete at once."""
        steps = self.policy.canary.steps if self.policy.canary else ()
        while s.step_index < len(steps) and isinstance(current := steps[s.step_index], SetWeight):
            where = f"step {s.step_index + 1}/{len(steps)}"
            s = replace(s, step_index=s.step_index + 1, canary_weight=current.percent)
            self.emit("StepAdvanced", f"{where}: canary weight {current.percent}%{self.numbers(s)}")
        return s

    def check_deadline(self, s: RolloutState) -> RolloutState:
        deadline = self.policy.progress_deadline
        if s.phase != "Progressing" or s.deadline_at is None or deadline is None or self.now < s.deadline_at:
            return s
        return self.roll_back(
            s,
            f"progressDeadline {deadline:g}s exceeded at step {s.step_index + 1} "
            f"with the canary at {s.canary_weight}%",
        )

    @staticmethod
    def numbers(s: RolloutState) -> str:
        return f" (last analysis {s.last_check.summary()})" if s.last_check else ""
