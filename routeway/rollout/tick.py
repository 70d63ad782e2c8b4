"""One route's rollout tick: everything an adapter does between reading and writing, pure.

Both adapters (`routeway serve` and the operator) run the same loop per route: build the
desired revision, read the policy, gather the analysis window when a check is due, `step`,
then serve the stable and canary snapshots at the canary's share and show the weights.
`tick_route` is that loop's body, so the two adapters differ only in where they keep the
state (memory, `status.rollout`), the snapshots (memory, ControllerRevisions) and the
samples (their own reads of the proxies' observation reports), and in how they read actions.

A snapshot the adapter cannot find (a ControllerRevision deleted by hand) is never guessed
at: the stable arm then serves the desired revision and `RouteTick.missing` names what was
missing, for the adapter to report; a canary without its snapshot gets no traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from routeway.rollout.machine import analysis_due, analysis_window, step
from routeway.rollout.observations import ArmObservation, Sample, arm_pair, window_observations
from routeway.rollout.revision import RouteRevision
from routeway.rollout.serving import ServedRoute
from routeway.rollout.state import Action, Decision, Inputs, RolloutState
from routeway.rollout.strategy import RolloutPolicy
from routeway.rollout.weights import WeightShare, canary_share, effective_weights


@dataclass(frozen=True, slots=True)
class RouteTick:
    """The outcome of one tick of one route."""

    decision: Decision
    served: ServedRoute  # what the proxies serve for this route now
    weights: tuple[WeightShare, ...]  # per (backend, arm) percent of the route's traffic
    missing: tuple[str, ...] = ()  # revision hashes whose snapshot was not found

    @property
    def state(self) -> RolloutState:
        return self.decision.state


def ready(revision: RouteRevision | None) -> bool:
    """A revision can take traffic: it has a weighted target (translation leaves out targets
    whose backend does not resolve, so one that lost all of them has none)."""
    return revision is not None and any(t.weight > 0 for t in revision.route.targets)


def tick_route(
    state: RolloutState | None,
    desired: RouteRevision,
    policy: RolloutPolicy,
    now: float,
    snapshots: Mapping[str, RouteRevision],
    samples: Sequence[Sample] | None = None,
    actions: Iterable[Action] = (),
    backends: frozenset[str] | None = None,
) -> RouteTick:
    """Step one route's rollout and say what to serve.

    `snapshots`: the revisions the adapter keeps, by hash (the desired one is added here).
    `samples`: the adapter's reads of the proxies' observation reports, oldest first; None
    when it has none to give (a check that is due is then inconclusive, "no observations").
    """
    known = {**snapshots, desired.hash: desired}
    route_id = desired.route.id
    observations: tuple[ArmObservation, ArmObservation] | None = None
    if (
        state is not None
        and samples is not None
        and state.desired == desired.hash  # a new spec starts a new rollout: nothing to judge
        and state.canary is not None
        and analysis_due(state, policy, now)
    ):
        start, end = analysis_window(state, policy, now)
        window = window_observations(samples, start, end)
        observations = arm_pair(window, route_id, state.stable.hash, state.canary.hash)
    upcoming = desired.hash if state is None or state.desired != desired.hash else _canary_hash(state)
    inputs = Inputs(
        desired=desired.ref,
        policy=policy,
        now=now,
        observations=observations,
        actions=tuple(actions),
        backends=backends,
        canary_ready=upcoming is None or ready(known.get(upcoming)),
        observed_from=min((s.at for s in samples), default=None) if samples else None,
    )
    decision = step(state, inputs)
    return _serve(decision, desired, known)


def _canary_hash(state: RolloutState) -> str | None:
    return state.canary.hash if state.canary is not None else None


def _serve(decision: Decision, desired: RouteRevision, known: Mapping[str, RouteRevision]) -> RouteTick:
    state = decision.state
    missing: list[str] = []
    stable = known.get(state.stable.hash)
    if stable is None:
        missing.append(state.stable.hash)
        stable = desired
    canary: RouteRevision | None = None
    serving = state.serving_canary
    if serving is not None:
        canary = known.get(serving.hash)
        if canary is None:
            missing.append(serving.hash)
    canary_targets = canary.route.targets if canary is not None else None
    percent = canary_share(state.canary_weight, canary_targets, ready(canary))
    weights = effective_weights(stable.route.targets, canary_targets, state.canary_weight, ready(canary))
    return RouteTick(decision, ServedRoute(stable, canary, percent), weights, tuple(missing))


def needed_revisions(state: RolloutState) -> set[str]:
    """The snapshots an adapter must keep for this route: the arms and every restorable
    revision of the history (what retry and undo may bring back)."""
    keep = {state.stable.hash, state.desired}
    if state.canary is not None:
        keep.add(state.canary.hash)
    keep.update(e.revision.hash for e in state.history if e.restorable)
    return keep


def keep_samples(samples: Sequence[Sample], since: float) -> list[Sample]:
    """The samples a window starting at `since` or later can still use: every one from `since`
    on, and per instance the newest before it (the baseline `window_observations` subtracts)."""
    baseline: dict[str, Sample] = {}
    recent: list[Sample] = []
    for sample in samples:
        if sample.at >= since:
            recent.append(sample)
        else:
            instance = sample.report.instance
            kept = baseline.get(instance)
            if kept is None or sample.at >= kept.at:
                baseline[instance] = sample
    return sorted([*baseline.values(), *recent], key=lambda s: s.at)
