"""The rollout state of one route, the machine's inputs and what it answers.

All values are frozen: the machine (routeway.rollout.machine) maps (state, inputs) to a new
state plus events, and an adapter stores the state wherever it lives (`status.rollout` in the
cluster, memory under `routeway serve`; routeway.rollout.document gives its JSON form).

Times are unix seconds as floats, always supplied by the caller (`Inputs.now`): the core
never reads a clock, so tests drive every transition with a fake one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from routeway.rollout.analysis import Judgement
from routeway.rollout.observations import ArmObservation
from routeway.rollout.revision import RevisionRef
from routeway.rollout.strategy import RolloutPolicy

Phase = Literal["Stable", "Progressing", "Paused", "RolledBack"]
PHASES: tuple[Phase, ...] = ("Stable", "Progressing", "Paused", "RolledBack")
Outcome = Literal["promoted", "rolledBack", "superseded"]
ActionKind = Literal["promote", "promote-full", "abort", "retry", "undo"]
ACTION_KINDS: tuple[ActionKind, ...] = ("promote", "promote-full", "abort", "retry", "undo")
PausedBy = Literal["step", "inconclusive"]
HANDLED_TOKENS_KEPT = 8
"""Handled tokens remembered per kind (newest first): an annotation put back to an older value
later is still recognised as handled, while status stays small."""


@dataclass(frozen=True, slots=True)
class Action:
    """A manual action as it currently stands (an annotation, an admin POST). `token` makes it
    one event: the same (kind, token) is handled once, however often it is seen again."""

    kind: ActionKind
    token: str
    revision: str | None = None  # undo: the revision to go back to


@dataclass(frozen=True, slots=True)
class HandledAction:
    kind: ActionKind
    token: str
    at: float


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """The latest outcome of one revision; one entry per revision, newest first."""

    revision: RevisionRef
    outcome: Outcome
    reason: str
    at: float
    restorable: bool = True  # every backend it references still exists


@dataclass(frozen=True, slots=True)
class Event:
    """Something to tell people (a Kubernetes Event, a log line): `reason` is CamelCase and
    stable, `message` carries the numbers that decided it."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase
    stable: RevisionRef
    desired: str  # the spec's revision hash as last seen: a different one is a new spec
    canary: RevisionRef | None = None  # in progress, or the one rolled back (kept for retry)
    step_index: int = 0  # the step being executed; len(steps) once done
    canary_weight: int = 0  # percent set by the last setWeight step; 0 outside a rollout
    started_at: float | None = None  # this rollout's start
    step_started_at: float | None = None  # when the current step began (timed pauses)
    deadline_at: float | None = None  # progressDeadline; pushed back by time spent Paused
    next_check_at: float | None = None  # when the next analysis check is due
    failed_checks: int = 0
    paused_by: PausedBy | None = None  # a wait that only a promote ends (spec.paused is apart)
    paused_at: float | None = None  # since when Paused, for any reason
    frozen_at: float | None = None  # since when spec.paused froze the rollout
    last_check: Judgement | None = None
    last_check_at: float | None = None
    message: str = ""  # why the phase is what it is (a rollback's reason with its numbers)
    history: tuple[HistoryEntry, ...] = ()
    handled: tuple[HandledAction, ...] = ()

    @property
    def in_progress(self) -> bool:
        return self.phase in ("Progressing", "Paused")

    @property
    def serving_canary(self) -> RevisionRef | None:
        """The canary arm to serve beside the stable one (a rolled-back canary is not served)."""
        return self.canary if self.in_progress else None

    def handled_token(self, kind: ActionKind) -> str | None:
        """The newest handled token of `kind`: what status echoes back."""
        return next((h.token for h in self.handled if h.kind == kind), None)

    def was_handled(self, action: Action) -> bool:
        return any(h.kind == action.kind and h.token == action.token for h in self.handled)

    def entry(self, revision: str) -> HistoryEntry | None:
        return next((e for e in self.history if e.revision.hash == revision), None)


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything one step of the machine looks at."""

    desired: RevisionRef  # the revision the spec describes now
    policy: RolloutPolicy
    now: float
    # (stable, canary) over `analysis_window(...)`; needed only when `analysis_due(...)`
    observations: tuple[ArmObservation, ArmObservation] | None = None
    actions: tuple[Action, ...] = ()
    backends: frozenset[str] | None = None  # ids of ModelBackends that exist; None: unknown
    # whether the canary arm has a ready target: while it has none it gets no traffic, so its
    # steps and checks wait (the progress deadline does not)
    canary_ready: bool = True
    # since when the adapter's samples reach back (its oldest read of the proxies); None:
    # unknown. An adapter that has watched for less than one interval (just restarted, a new
    # leader) cannot see a window's traffic: a due check then waits instead of judging an
    # empty window (see machine.analyse).
    observed_from: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    events: tuple[Event, ...] = ()
    check: Judgement | None = None  # the analysis check made in this step, if one was
    # Step again by then: a timed pause ends, the deadline, or a check is due (at or before
    # `now` when a due check got no observations: gather them and step again).
    wake_at: float | None = None


def record(
    history: tuple[HistoryEntry, ...], revision: RevisionRef, outcome: Outcome, reason: str, at: float
) -> tuple[HistoryEntry, ...]:
    """`history` with `revision`'s entry replaced by a new one at the front."""
    rest = tuple(e for e in history if e.revision.hash != revision.hash)
    return (HistoryEntry(revision, outcome, reason, at), *rest)


def prune(history: tuple[HistoryEntry, ...], limit: int, keep: Iterable[str]) -> tuple[HistoryEntry, ...]:
    """The newest `limit` entries, never dropping one in `keep` (the stable revision's, which
    stays restorable whatever the limit): a kept entry then takes an older one's place."""
    keep = set(keep)
    kept = [e for e in history if e.revision.hash in keep]
    room = max(limit - len(kept), 0)
    others = [e for e in history if e.revision.hash not in keep][:room]
    chosen = {id(e) for e in (*kept, *others)}
    return tuple(e for e in history if id(e) in chosen)


def refresh_restorable(
    history: tuple[HistoryEntry, ...], backends: frozenset[str] | None
) -> tuple[HistoryEntry, ...]:
    if backends is None:
        return history
    return tuple(
        e
        if e.restorable == set(e.revision.backends).issubset(backends)
        else replace(e, restorable=not e.restorable)
        for e in history
    )


def missing_backends(revision: RevisionRef, backends: frozenset[str] | None) -> list[str]:
    return [] if backends is None else sorted(set(revision.backends) - backends)


def remember(handled: tuple[HandledAction, ...], action: Action, at: float) -> tuple[HandledAction, ...]:
    """`handled` with `action` in front, keeping the newest `HANDLED_TOKENS_KEPT` of each kind."""
    out: list[HandledAction] = []
    per_kind: dict[str, int] = {}
    for h in (HandledAction(action.kind, action.token, at), *handled):
        per_kind[h.kind] = per_kind.get(h.kind, 0) + 1
        if per_kind[h.kind] <= HANDLED_TOKENS_KEPT:
            out.append(h)
    return tuple(out)
