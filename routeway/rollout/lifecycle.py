"""How a rollout begins, pauses and ends: the transitions every other rule ends in.

Split from routeway.rollout.machine (which decides *when*) so each module stays readable:
`Lifecycle` holds one step's context (inputs, the events and check it produced) and the
state changes that start, supersede, promote, roll back, pause and resume a rollout, each
emitting its event and recording its history entry.
"""

from __future__ import annotations

from dataclasses import replace

from routeway.rollout.analysis import Judgement
from routeway.rollout.revision import RevisionRef
from routeway.rollout.state import Event, Inputs, PausedBy, RolloutState, record


class Lifecycle:
    """One step's context: the inputs and the events and check it produced."""

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.now = inputs.now
        self.policy = inputs.policy
        self.events: list[Event] = []
        self.check: Judgement | None = None

    def emit(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(reason, message, warning))

    # ------------------------------------------------------------------ rollouts begin and end

    def start(self, s: RolloutState, target: RevisionRef, why: str) -> RolloutState:
        """A rollout of `target` from the stable revision (at once without a canary strategy)."""
        if s.in_progress:
            s = self.supersede(s, f"superseded by revision {target.hash} ({why})")
        canary = self.policy.canary
        if canary is None:
            self.emit("Promoted", f"revision {target.hash} applied at once ({why}; no canary strategy)")
            return self.settle(
                replace(s, history=record(s.history, target, "promoted", why, self.now)), target
            )
        analysis = canary.analysis
        deadline = self.policy.progress_deadline
        self.emit("RolloutStarted", f"rollout of revision {target.hash} from stable {s.stable.hash} ({why})")
        return replace(
            self.cleared(s),
            phase="Progressing",
            canary=target,
            started_at=self.now,
            step_started_at=self.now,
            deadline_at=self.now + deadline if deadline is not None else None,
            next_check_at=self.now + analysis.interval if analysis else None,
            last_check=None,
            last_check_at=None,
        )

    def supersede(self, s: RolloutState, reason: str) -> RolloutState:
        assert s.canary is not None
        self.emit("Superseded", f"revision {s.canary.hash} superseded: {reason}")
        return replace(s, history=record(s.history, s.canary, "superseded", reason, self.now))

    def promote(self, s: RolloutState, reason: str) -> RolloutState:
        assert s.canary is not None
        numbers = f"; last analysis {s.last_check.summary()}" if s.last_check else ""
        self.emit("Promoted", f"revision {s.canary.hash} promoted to stable: {reason}{numbers}")
        return self.settle(
            replace(s, history=record(s.history, s.canary, "promoted", reason, self.now)), s.canary
        )

    def roll_back(self, s: RolloutState, reason: str) -> RolloutState:
        assert s.canary is not None
        self.emit("RolledBack", f"revision {s.canary.hash} rolled back: {reason}", warning=True)
        history = record(s.history, s.canary, "rolledBack", reason, self.now)
        return replace(self.cleared(s), phase="RolledBack", history=history, message=reason)

    def settle(self, s: RolloutState, stable: RevisionRef) -> RolloutState:
        return replace(self.cleared(s), phase="Stable", stable=stable, canary=None)

    @staticmethod
    def cleared(s: RolloutState) -> RolloutState:
        """No rollout running: every per-rollout field back to rest (history and tokens stay)."""
        return replace(
            s,
            step_index=0,
            canary_weight=0,
            started_at=None,
            step_started_at=None,
            deadline_at=None,
            next_check_at=None,
            failed_checks=0,
            paused_by=None,
            paused_at=None,
            frozen_at=None,
            message="",
        )

    # ------------------------------------------------------------------ pausing

    def pause(self, s: RolloutState, by: PausedBy, message: str) -> RolloutState:
        self.emit("RolloutPaused", message)
        return replace(s, phase="Paused", paused_by=by, paused_at=s.paused_at or self.now, message=message)

    def resume(self, s: RolloutState) -> RolloutState:
        """Back to Progressing; time spent Paused does not count against the deadline."""
        deadline = s.deadline_at
        if deadline is not None and s.paused_at is not None:
            deadline += self.now - s.paused_at
        return replace(
            s, phase="Progressing", paused_by=None, paused_at=None, deadline_at=deadline, message=""
        )
