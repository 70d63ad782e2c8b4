"""Rollouts under `routeway serve`: the in-memory adapter of the rollout core (pure).

`ServeRollouts` keeps, per route, the rollout state, the policy read from its ModelRoute, the
revision snapshots `needed_revisions` asks for, and the samples of the proxy's observation
reports; it runs `tick_route` (routeway.rollout.tick) whenever something may have moved — the
files were saved (`load`), a route's `wake_at` came (`tick`), a person acted (`act`) — and
says what to serve (`served`: the rendered config with every route's arms put in by
`serve_rollouts`). No clock, socket or task here: the caller passes `now` and the reports,
and routeway.serve_driver does the waiting, the reading and the admin endpoints, so every
transition of the adapter is tested with a fake clock like the core's.

State lives in memory only. A restart of `serve` forgets every rollout: the manifests as
found at start-up become the stable revisions (the first `tick_route` of a route is Stable
with its spec), a rollout in progress ends wherever the files stand (with the new spec as
stable), a rolled-back revision still in the files is then served to all traffic, and the
history starts over. Roll back by editing the files (a Git revert) before restarting if
that is not what you want.

A route that leaves the config (deleted, or left out by a translation finding) keeps its
state here, so fixing it later continues from its stable revision rather than taking the
fixed spec as stable without a rollout; `/rollouts` lists only the routes being served.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routeway.credentials import Lookup
from routeway.proxyconfig import ProxyConfig
from routeway.rollout import (
    Action,
    ArmObservation,
    Event,
    Report,
    RolloutPolicy,
    Sample,
    policy_from_spec,
    state_to_document,
)
from routeway.rollout.revision import RouteRevision
from routeway.rollout.serving import ServedRoute, desired_revisions, serve_rollouts
from routeway.rollout.state import ActionKind
from routeway.rollout.strategy import Pause, SetWeight
from routeway.rollout.tick import RouteTick, keep_samples, needed_revisions, tick_route

log = logging.getLogger("routeway.serve")


@dataclass
class _Route:
    """One route's rollout as this process knows it."""

    model: str  # the public model name
    desired: RouteRevision  # what the files describe now
    policy: RolloutPolicy
    tick: RouteTick  # the last step: the state, what is served, the weights, when to wake

    @property
    def wake_at(self) -> float | None:
        return self.tick.decision.wake_at


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an admin action did: the route's new document, or why the machine refused it."""

    document: dict[str, Any]
    refused: str | None = None  # the ActionRefused message


class UnknownRoute(KeyError):
    """No route of that id is being served."""


def policies_from_specs(
    specs: Mapping[str, Mapping[str, Any]], previous: Mapping[str, RolloutPolicy]
) -> tuple[dict[str, RolloutPolicy], list[str]]:
    """Each route's policy from its spec document (`model_dump(by_alias=True, mode="json")`).

    The resource model already validated the spec, so a refusal here is a disagreement
    between the two validations: the route keeps its previous policy (none: no strategy)
    and the problem is returned, rather than taking a change live at once by accident."""
    policies: dict[str, RolloutPolicy] = {}
    problems: list[str] = []
    for route_id, spec in specs.items():
        try:
            policies[route_id] = policy_from_spec(spec)
        except ValueError as exc:
            policies[route_id] = previous.get(route_id, RolloutPolicy())
            problems.append(f"ModelRoute {route_id}: rollout policy not applied: {exc}")
    return policies, problems


class ServeRollouts:
    """Every route's rollout in one `routeway serve` process. Not thread-safe: one event loop
    calls it."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._snapshots: dict[str, dict[str, RouteRevision]] = {}
        # per route: a report is split by route as it comes, so judging one route's window
        # reads its own arms, not every route's (bench/RESULTS.md, "Rollout analysis")
        self._samples: dict[str, list[Sample]] = {}
        self._observed = False  # a report was ever given: then checks judge the samples
        self._config: ProxyConfig | None = None  # as rendered from the files (the desired state)
        self._ids: frozenset[str] = frozenset()  # the routes it renders
        self._backends: frozenset[str] | None = None
        self._latest_credentials: dict[str, str] = {}  # what the files resolve now
        self._credentials: dict[str, str] = {}  # and what pinned backends still need
        self._lookup: Lookup | None = None  # the last read's Secrets
        self._served: ProxyConfig | None = None
        self._tokens = itertools.count(1)
        self._salt = secrets.token_hex(4)  # tokens of this run never collide with another's

    # ------------------------------------------------------------------ inputs

    def load(
        self,
        config: ProxyConfig,
        specs: Mapping[str, Mapping[str, Any]],
        now: float,
        *,
        backends: frozenset[str] | None = None,
        credentials: Mapping[str, str] | None = None,
        lookup: Lookup | None = None,
    ) -> list[str]:
        """A new read of the files: step every rendered route with its (maybe new) revision
        and policy. `specs`: ModelRoute spec documents by route id; `lookup`: the files'
        Secrets, for a credential only a rollout arm names. Returns problems."""
        self._config = config
        self._ids = frozenset(r.id for r in config.routes)
        self._backends = backends
        previous = {rid: r.policy for rid, r in self._routes.items()}
        policies, problems = policies_from_specs(specs, previous)
        self._latest_credentials = dict(credentials or {})
        self._lookup = lookup
        models = {r.id: r.model for r in config.routes}
        for route_id, desired in desired_revisions(config).items():
            self._step(route_id, models[route_id], desired, policies.get(route_id, RolloutPolicy()), now)
        self._render()
        return problems

    def observe(self, report: Report, now: float) -> None:
        """One read of the proxy's observations (`now`: this process's clock, not the proxy's).

        Every route with an analysis gets a sample, one without traffic an empty one: the
        newest sample of an instance must be the newest read (a restarted proxy's zeros)."""
        by_route: dict[str, dict[tuple[str, str], ArmObservation]] = {}
        for key, observation in report.arms.items():
            by_route.setdefault(key[0], {})[key] = observation
        for route_id, route in self._routes.items():
            if route.policy.analysis is not None and route_id in self._ids:
                arms = by_route.get(route_id, {})
                sample = Sample(now, Report(report.instance, report.started_at, arms))
                self._samples.setdefault(route_id, []).append(sample)
        self._observed = True

    def tick(self, now: float) -> None:
        """Step the routes whose `wake_at` has come; forget samples no window needs any more."""
        stepped = False
        for route_id, route in list(self._routes.items()):
            if route.wake_at is not None and route.wake_at <= now and self._is_served(route_id):
                self._step(route_id, route.model, route.desired, route.policy, now)
                stepped = True
        if stepped:
            self._render()
        for route_id, samples in self._samples.items():
            route = self._routes[route_id]
            analysis = route.policy.analysis
            window = analysis.window if analysis is not None and route.tick.state.in_progress else 0.0
            self._samples[route_id] = keep_samples(samples, now - window)

    def act(self, route_id: str, kind: ActionKind, now: float, revision: str | None = None) -> ActionResult:
        """A manual action (an admin POST) with a fresh token: applied once, never replayed."""
        route = self._routes.get(route_id)
        if route is None or not self._is_served(route_id):
            raise UnknownRoute(route_id)
        action = Action(kind, f"serve-{self._salt}-{next(self._tokens)}", revision)
        events = self._step(route_id, route.model, route.desired, route.policy, now, (action,))
        self._render()
        refused = next((e.message for e in events if e.reason == "ActionRefused"), None)
        return ActionResult(self.document(route_id), refused)

    # ------------------------------------------------------------------ outputs

    def served(self) -> ProxyConfig | None:
        """The config to serve: the rendered one with every route's arms in it."""
        return self._served

    @property
    def credentials(self) -> dict[str, str]:
        """The latest credentials, and earlier values of any that only a pinned backend (an
        arm's older backend spec) still references."""
        return self._credentials

    def next_wake(self) -> float | None:
        times = [
            r.wake_at for rid, r in self._routes.items() if r.wake_at is not None and self._is_served(rid)
        ]
        return min(times) if times else None

    @property
    def has_analysis(self) -> bool:
        """Whether a served route has an analysis: its observations are worth reading (before a
        rollout too, so a window has a baseline from before the rollout began)."""
        return any(r.policy.analysis is not None for rid, r in self._routes.items() if rid in self._ids)

    def routes(self) -> list[str]:
        return sorted(rid for rid in self._routes if self._is_served(rid))

    def document(self, route_id: str) -> dict[str, Any]:
        """The route's rollout for `/rollouts`: the pinned fields first (route, phase,
        stableRevision, canaryRevision, step, weights, analysis, history), then the full
        `state_to_document` and the policy (steps with their kind, so a client can draw
        progress)."""
        route = self._routes.get(route_id)
        if route is None or not self._is_served(route_id):
            raise UnknownRoute(route_id)
        state = route.tick.state
        doc = state_to_document(state, route.tick.weights)
        return {
            "route": route_id,
            "model": route.model,
            "phase": doc.pop("phase"),
            "stableRevision": doc.pop("stableRevision"),
            "canaryRevision": doc.pop("canaryRevision"),
            "desiredRevision": doc.pop("desiredRevision"),
            "step": state.step_index,
            "weights": doc.pop("weights"),
            "analysis": doc.pop("analysis"),
            "history": doc.pop("history"),
            "canaryPercent": route.tick.served.canary_percent,  # 0 while the canary is not ready
            **doc,
            "missingSnapshots": list(route.tick.missing),
            "policy": policy_document(route.policy),
        }

    def documents(self) -> list[dict[str, Any]]:
        return [self.document(rid) for rid in self.routes()]

    # ------------------------------------------------------------------ inside

    def _is_served(self, route_id: str) -> bool:
        return route_id in self._ids

    def _step(
        self,
        route_id: str,
        model: str,
        desired: RouteRevision,
        policy: RolloutPolicy,
        now: float,
        actions: Iterable[Action] = (),
    ) -> tuple[Event, ...]:
        known = self._routes.get(route_id)
        snapshots = self._snapshots.setdefault(route_id, {})
        tick = tick_route(
            known.tick.state if known is not None else None,
            desired,
            policy,
            now,
            snapshots,
            self._samples.get(route_id, []) if self._observed else None,
            actions,
            self._backends,
        )
        keep = needed_revisions(tick.state)
        self._snapshots[route_id] = {
            h: r for h, r in {**snapshots, desired.hash: desired}.items() if h in keep
        }
        self._routes[route_id] = _Route(model, desired, policy, tick)
        for event in tick.decision.events:
            level = logging.WARNING if event.warning else logging.INFO
            log.log(level, "rollout of %s: %s: %s", route_id, event.reason, event.message)
        for missing in tick.missing:
            log.warning("rollout of %s: no snapshot of revision %s", route_id, missing)
        return tick.decision.events

    def _render(self) -> None:
        if self._config is None:
            return
        served: dict[str, ServedRoute] = {
            r.id: self._routes[r.id].tick.served for r in self._config.routes if r.id in self._routes
        }
        self._served = serve_rollouts(self._config, served)
        self._credentials = self._needed_credentials(self._latest_credentials)

    def _needed_credentials(self, latest: dict[str, str]) -> dict[str, str]:
        needed: set[str] = set()
        for route in self._served.routes if self._served is not None else ():
            pinned = [*route.pinned_backends, *(route.canary.pinned_backends if route.canary else ())]
            needed.update(b.credential_ref for b in pinned if b.credential_ref)
        kept = {ref: value for ref, value in self._credentials.items() if ref in needed}
        # a ref neither the files' config nor an earlier arm resolved (an undo to a revision
        # whose backend named another Secret): looked up in the files' Secrets
        found: dict[str, str] = {}
        lookup = self._lookup
        if lookup is not None:
            for ref in sorted(needed - kept.keys() - latest.keys()):
                namespace, name, key = ref.split("/", 2)
                value = lookup(namespace, name, key)
                if value is not None:
                    found[ref] = value
        return {**found, **kept, **latest}


def policy_document(policy: RolloutPolicy) -> dict[str, Any]:
    """The policy as the route asks for it, durations in seconds (for a progress view)."""
    canary = policy.canary
    analysis = policy.analysis
    steps: list[dict[str, Any]] = []
    for step in canary.steps if canary else ():
        if isinstance(step, SetWeight):
            steps.append({"kind": "setWeight", "weight": step.percent})
        elif isinstance(step, Pause):
            steps.append({"kind": "pause", "duration": step.duration})
    return {
        "steps": steps,
        "analysis": None
        if analysis is None
        else {
            "interval": analysis.interval,
            "window": analysis.window,
            "minRequests": analysis.min_requests,
            "failureLimit": analysis.failure_limit,
            "onInconclusive": analysis.on_inconclusive,
            "metrics": [
                {"name": m.name, "max": m.max, "maxRatioToStable": m.max_ratio_to_stable}
                for m in analysis.metrics
            ],
        },
        "paused": policy.paused,
        "progressDeadline": policy.progress_deadline,
        "revisionHistoryLimit": policy.revision_history_limit,
    }
