"""The operator's rollout adapter: one gateway reconcile's rollout work, around the pure tick.

Per route rendered (routeway.rollout.tick does the deciding; this module only gathers and
writes):

1. `plan_rollouts`, before anything is written: the desired revision (from the rendered
   config), the state (`status.rollout`, the only place it is kept; malformed → afresh from the
   spec), the snapshots (the route's ControllerRevisions), the actions (annotations), the
   ModelBackends that exist and the samples of the proxies' observations (read from the
   gateway's ready pods, at most every half analysis interval) → `tick_route`.
2. `store_revisions`, before the config is applied: a ControllerRevision for a desired revision
   not stored yet, so an arm is never served from a snapshot that is not kept.
3. The gateway reconcile applies `serve_rollouts(config, plan.served)` instead of the plain
   render and writes each route's status with `plan.views(...)` (the new state only when the
   config holding it was applied: a failed write advances nothing, and an action whose result
   was not served is handled again next time).
4. `finish_rollouts`, after the statuses are written: Events with the numbers, metrics, pruning
   of ControllerRevisions to what the state still needs, of samples to what a window can still
   use, and the gateway's next reconcile (the earliest `wake_at`, and at least every analysis
   interval while a route is in progress).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeway.proxyconfig import ProxyConfig
from routeway.resources import ModelGateway, ModelRoute
from routeway.rollout.document import state_from_document, state_to_document
from routeway.rollout.machine import analysis_due, analysis_window
from routeway.rollout.observations import Sample
from routeway.rollout.revision import RouteRevision
from routeway.rollout.serving import ServedRoute, desired_revisions
from routeway.rollout.state import PHASES, Action, ActionKind, RolloutState
from routeway.rollout.strategy import RolloutPolicy, policy_from_spec
from routeway.rollout.tick import RouteTick, keep_samples, needed_revisions, tick_route
from routeway.rollout_status import rollout_condition
from routeway.status import Condition
from routeway.translate import NsName, ObjectKey
from routeway_operator.inventory import Entry, first
from routeway_operator.proxies import read_pods, ready_pods
from routeway_operator.revisions import StoredRevision
from routeway_operator.state import GATEWAY, OperatorState

log = logging.getLogger("routeway.operator.rollouts")

PROXIES_READ_GAP = 1.0
"""Seconds between reads of a gateway's pods when no rollout asks for more (status.proxies)."""
PROXIES_RECHECK = 5.0
"""Seconds until a gateway whose ready pods do not all serve its config revision is read again."""
MIN_REQUEUE = 0.05


@dataclass(frozen=True)
class RouteRollout:
    """One route's tick, with what it was computed from."""

    entry: Entry
    policy: RolloutPolicy
    previous: RolloutState | None
    tick: RouteTick
    stored: Mapping[str, StoredRevision]
    desired: RouteRevision

    @property
    def route_id(self) -> str:
        return f"{self.entry.namespace}/{self.entry.name}"


@dataclass(frozen=True)
class RolloutView:
    """What a route's status shows of its rollout: the Ready prerequisite and the document
    (None: leave `status.rollout` as it is)."""

    condition: Condition | None
    document: dict[str, Any] | None


@dataclass
class RolloutPlan:
    gateway: NsName
    now: float
    routes: dict[NsName, RouteRollout] = field(default_factory=dict)

    @property
    def served(self) -> dict[str, ServedRoute]:
        return {r.route_id: r.tick.served for r in self.routes.values()}

    def views(self) -> dict[NsName, RolloutView]:
        """The new states, to be shown once the config serving them is applied."""
        return {
            key: RolloutView(
                rollout_condition(r.tick.state, r.policy), state_to_document(r.tick.state, r.tick.weights)
            )
            for key, r in self.routes.items()
        }


def unchanged_view(entry: Entry) -> RolloutView:
    """A route whose rollout did not move in this reconcile (not rendered, or its config was
    not applied): its previous state still decides Ready, and `status.rollout` stays."""
    previous = previous_state(entry)
    if previous is None or not isinstance(entry.model, ModelRoute):
        return RolloutView(None, None)
    try:
        policy = policy_from_spec(entry.model.spec.model_dump(by_alias=True, mode="json"))
    except ValueError:
        policy = RolloutPolicy()
    return RolloutView(rollout_condition(previous, policy), None)


def previous_state(entry: Entry) -> RolloutState | None:
    doc = entry.status.get("rollout")
    if not isinstance(doc, Mapping):
        return None
    try:
        return state_from_document(doc)
    except ValueError as exc:
        log.warning("route %s/%s: status.rollout is malformed, starting afresh: %s", *entry.key, exc)
        return None


def route_actions(entry: Entry, stored: Mapping[str, StoredRevision]) -> tuple[Action, ...]:
    """The route's action annotations as the machine's actions; `undo` may name a revision by
    its ControllerRevision number as well as by its hash, optionally followed by `@TOKEN`.

    Why the token: the whole value is what is handled once, so `undo: 3` left on the route
    never undoes a later rollout — and so a second undo to revision 3 needs a new value,
    `3@<anything new>` (what `routeway rollout undo` writes)."""
    numbers = {str(s.number): s.hash for s in stored.values()}
    actions = []
    for kind, value in entry.actions:
        if kind == "undo":
            revision = value.split("@", 1)[0].strip()
            actions.append(Action("undo", value, numbers.get(revision, revision)))
        else:
            actions.append(Action(_kind(kind), value))
    return tuple(actions)


def _kind(kind: str) -> ActionKind:
    assert kind in ("promote", "promote-full", "abort", "retry", "undo")
    return kind  # type: ignore[return-value]


async def plan_rollouts(
    state: OperatorState, key: NsName, gateway: ModelGateway, routes: Sequence[Entry], config: ProxyConfig
) -> RolloutPlan:
    now = state.clock()
    plan = RolloutPlan(key, now)
    entries = {f"{e.namespace}/{e.name}": e for e in routes}
    inputs: list[tuple[Entry, RouteRevision, RolloutPolicy, RolloutState | None]] = []
    for route_id, desired in desired_revisions(config).items():
        entry = entries.get(route_id)
        if entry is None or not isinstance(entry.model, ModelRoute):
            continue
        try:
            policy = policy_from_spec(entry.model.spec.model_dump(by_alias=True, mode="json"))
        except ValueError as exc:  # translation refuses such a route first; never guessed at
            log.warning("route %s: no rollout: %s", route_id, exc)
            continue
        inputs.append((entry, desired, policy, previous_state(entry)))
    samples = await gather_samples(state, key, gateway, [(p, pol, d) for _, d, pol, p in inputs], now)
    stored = await state.revision_store.list({e.namespace for e, *_ in inputs}) if inputs else {}
    namespaces = {e.namespace for e, *_ in inputs}
    backends = frozenset(
        f"{k[0]}/{k[1]}"
        for k in list(state.indexes.backends)
        if k[0] in namespaces and first(state.indexes.backends, k) is not None
    )
    for entry, desired, policy, previous in inputs:
        mine = {h: s for h, s in stored.get(entry.key, {}).items() if s.owner_uid in (entry.uid, "")}
        snapshots = {h: s.revision for h, s in mine.items() if s.revision is not None}
        tick = tick_route(
            previous, desired, policy, now, snapshots, samples, route_actions(entry, mine), backends
        )
        if tick.missing:
            log.warning(
                "route %s: revisions without a stored snapshot: %s", entry.key, ", ".join(tick.missing)
            )
        plan.routes[entry.key] = RouteRollout(entry, policy, previous, tick, mine, desired)
    return plan


async def gather_samples(
    state: OperatorState,
    key: NsName,
    gateway: ModelGateway,
    routes: Iterable[tuple[RolloutState | None, RolloutPolicy, RouteRevision]],
    now: float,
) -> list[Sample]:
    """Read the gateway's ready proxy pods when a check is due, or when the last read is older
    than half the shortest analysis interval of a route in (or starting) a rollout; every
    `PROXIES_READ_GAP` otherwise, for status.proxies. The samples kept so far, plus the new."""
    intervals = []
    due = False
    for previous, policy, desired in routes:
        if policy.analysis is None or previous is None:
            continue
        if previous.in_progress or previous.desired != desired.hash:
            intervals.append(policy.analysis.interval)
            due = due or analysis_due(previous, policy, now)
    gap = min(intervals) / 2 if intervals else PROXIES_READ_GAP
    last = state.last_read.get(key)
    samples = state.samples.setdefault(key, [])
    if not due and last is not None and now - last < gap:
        return list(samples)
    reads = await read_pods(state.proxy_reader, await ready_pods(state.api, gateway))
    state.last_read[key] = now
    state.pod_revisions[key] = [r.revision for r in reads]
    samples.extend(Sample(now, r.report) for r in reads if r.report is not None)
    return list(samples)


async def store_revisions(state: OperatorState, plan: RolloutPlan) -> None:
    """A ControllerRevision for every desired revision not stored yet (numbered on)."""
    for r in plan.routes.values():
        if r.desired.hash in r.stored:
            continue
        number = max((s.number for s in r.stored.values()), default=0) + 1
        await state.revision_store.create(r.entry, r.desired, number)


async def finish_rollouts(state: OperatorState, plan: RolloutPlan, config_revision: str | None) -> None:
    """After the statuses are written: Events, metrics, pruning, the next reconcile."""
    for r in plan.routes.values():
        decision = r.tick.decision
        for event in decision.events:
            post = state.events.warning if event.warning else state.events.normal
            await post(r.entry.reference(), event.reason, event.message)
        _record_metrics(state, r)
        keep = needed_revisions(decision.state) | {r.desired.hash}
        for stored in r.stored.values():
            if stored.hash not in keep:
                await state.revision_store.delete(r.entry.namespace, stored.name)
    previous_routes = state.rollout_routes.get(plan.gateway, set())
    current = {r.route_id for r in plan.routes.values()}
    for gone in previous_routes - current:
        state.metrics.forget_route(gone)
    state.rollout_routes[plan.gateway] = current
    _prune_samples(state, plan)
    delay = next_reconcile(state, plan, config_revision)
    if delay is not None:
        state.reconciler.wake(ObjectKey(GATEWAY, *plan.gateway), max(delay, MIN_REQUEUE))


def _record_metrics(state: OperatorState, r: RouteRollout) -> None:
    phase = r.tick.state.phase
    for p in PHASES:
        state.metrics.rollout_phase.labels(r.route_id, p).set(1 if p == phase else 0)
    state.metrics.rollout_canary_weight.labels(r.route_id).set(r.tick.served.canary_percent)
    check = r.tick.decision.check
    if check is not None:
        state.metrics.rollout_analysis.labels(r.route_id, check.verdict).inc()


def _prune_samples(state: OperatorState, plan: RolloutPlan) -> None:
    starts = [
        analysis_window(r.tick.state, r.policy, plan.now)[0]
        for r in plan.routes.values()
        if r.tick.state.in_progress and r.policy.analysis is not None
    ]
    if starts:
        state.samples[plan.gateway] = keep_samples(state.samples.get(plan.gateway, []), min(starts))
    else:
        state.samples.pop(plan.gateway, None)


def next_reconcile(state: OperatorState, plan: RolloutPlan, config_revision: str | None) -> float | None:
    """Seconds until the gateway should be reconciled again by itself (None: only on a change)."""
    times = []
    for r in plan.routes.values():
        s = r.tick.state
        if r.tick.decision.wake_at is not None:
            times.append(r.tick.decision.wake_at)
        if s.in_progress and s.frozen_at is None and r.policy.analysis is not None:
            times.append(plan.now + r.policy.analysis.interval)
    revisions = state.pod_revisions.get(plan.gateway) or []
    if config_revision is not None and any(rev != config_revision for rev in revisions):
        times.append(plan.now + PROXIES_RECHECK)
    return min(times) - plan.now if times else None


def proxies_current(state: OperatorState, gateway: NsName, config_revision: str | None) -> int | None:
    """Ready pods whose last read served `config_revision` (None: never read)."""
    revisions = state.pod_revisions.get(gateway)
    if revisions is None or config_revision is None:
        return None
    return sum(1 for rev in revisions if rev == config_revision)
