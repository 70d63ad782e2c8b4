"""Helpers for the rollout tests: revisions from real translation, observations, a fake clock.

`Driver` steps one route's rollout at the times a test names (the fake clock) and checks two
contract points on every step, so every scenario in the tests also covers them: the state
survives its JSON document (what the operator stores in status) unchanged, and stepping again
with the same inputs changes nothing (a resync is harmless).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from core_factories import backend, gateway, route

from routeway.proxyconfig import BackendConfig, RouteConfig
from routeway.render import render_all
from routeway.rollout import (
    Action,
    ArmObservation,
    Decision,
    Event,
    Histogram,
    Inputs,
    RevisionRef,
    RolloutPolicy,
    RolloutState,
    RouteRevision,
    build_revision,
    policy_from_spec,
    state_from_document,
    state_to_document,
    step,
)
from routeway.translate import Inventory, translate

LATENCY_BOUNDS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)


def _pinned_spec() -> dict[str, Any]:
    """The issue's pinned example, read from examples/canary/route.yaml (its one copy): the
    route's strategy, revisionHistoryLimit, paused and progressDeadline."""
    example = Path(__file__).resolve().parents[2] / "examples" / "canary" / "route.yaml"
    for document in yaml.safe_load_all(example.read_text()):
        if document and document.get("kind") == "ModelRoute":
            spec = document["spec"]
            return {
                key: spec[key] for key in ("strategy", "revisionHistoryLimit", "paused", "progressDeadline")
            }
    raise AssertionError(f"no ModelRoute in {example}")


PINNED_SPEC: dict[str, Any] = _pinned_spec()


def policy(**changes: Any) -> RolloutPolicy:
    """The issue's pinned example, with top-level spec fields or canary parts replaced."""
    spec: dict[str, Any] = {
        "strategy": {"canary": dict(PINNED_SPEC["strategy"]["canary"])},
        **{k: v for k, v in PINNED_SPEC.items() if k != "strategy"},
    }
    canary = spec["strategy"]["canary"]
    for key, value in changes.items():
        if key in ("steps", "analysis"):
            if value is None:
                canary.pop(key)
            else:
                canary[key] = value
        elif key == "analysis_changes":
            canary["analysis"] = {**canary["analysis"], **value}
        else:
            spec[key] = value
    return policy_from_spec(spec)


def analysis_spec(**changes: Any) -> dict[str, Any]:
    base = dict(PINNED_SPEC["strategy"]["canary"]["analysis"])
    base.update(changes)
    return base


def rev(name: str, *backends: str) -> RevisionRef:
    return RevisionRef(name, tuple(backends) or ("default/a",))


def histogram(*values: float, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return Histogram(bounds, tuple(counts))


def obs(
    requests: int,
    errors: int = 0,
    latency: float = 0.3,
    ttft: float = 0.3,
    client: int = 0,
    rejected: int = 0,
) -> ArmObservation:
    """`requests` judged attempts of which `errors` were 5xx and `rejected` upstream 401/403/
    404/408/429, the successes all with the same latency/ttft; `client` 400/413/422 besides."""
    ok = requests - errors - rejected
    return ArmObservation(
        success=ok,
        server_error=errors,
        client_error=client,
        upstream_rejected=rejected,
        latency=_flat(latency, ok),
        ttft=_flat(ttft, ok),
    )


def _flat(value: float, n: int) -> Histogram:
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    counts[next((i for i, b in enumerate(LATENCY_BOUNDS) if value <= b), len(LATENCY_BOUNDS))] = n
    return Histogram(LATENCY_BOUNDS, tuple(counts))


BASE_OBJECTS: list[Any] = [backend("a"), backend("b"), route("chat", [("a", 90), ("b", 10)])]

GOOD = (obs(1000), obs(1000))
BAD = (obs(1000), obs(1000, errors=300))
THIN = (obs(1000), obs(10))


class Driver:
    """One route's rollout under a fake clock."""

    def __init__(self, pol: RolloutPolicy, desired: RevisionRef | None = None, now: float = 0.0) -> None:
        self.policy = pol
        self.desired = desired or rev("r1")
        self.backends: frozenset[str] | None = None
        self.now = now
        self.events: list[Event] = []
        self.state: RolloutState = step(None, self.inputs()).state

    def inputs(self, **kw: Any) -> Inputs:
        return Inputs(self.desired, self.policy, self.now, backends=self.backends, **kw)

    def at(
        self,
        now: float,
        *,
        desired: RevisionRef | None = None,
        pol: RolloutPolicy | None = None,
        actions: tuple[Action, ...] = (),
        observations: tuple[ArmObservation, ArmObservation] | None = None,
        canary_ready: bool = True,
    ) -> Decision:
        assert now >= self.now, "the fake clock never goes back"
        self.now = now
        self.desired = desired or self.desired
        self.policy = pol or self.policy
        inputs = self.inputs(actions=actions, observations=observations, canary_ready=canary_ready)
        decision = step(self.state, inputs)
        again = step(decision.state, inputs)
        assert again.state == decision.state and again.events == (), "stepping twice must change nothing"
        assert state_from_document(state_to_document(decision.state)) == decision.state
        self.state = decision.state
        self.events.extend(decision.events)
        return decision

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def summary(self) -> tuple[str, int, int, str | None]:
        s = self.state
        return (s.phase, s.step_index, s.canary_weight, s.canary.hash if s.canary else None)


def act(kind: Any, token: str, revision: str | None = None) -> tuple[Action, ...]:
    return (Action(kind, token, revision),)


# ---------------------------------------------------------------------------- real revisions


def translated(objects: list[Any], route_name: str = "chat") -> tuple[RouteConfig, dict[str, BackendConfig]]:
    """The translated and rendered RouteConfig and backends of `route_name`."""
    config = render_all(translate(Inventory.from_objects([gateway(), *objects])))[("default", "default")]
    route_config = next(r for r in config.routes if r.name == route_name)
    return route_config, {b.id: b for b in config.backends}


def revision_of(objects: list[Any], route_name: str = "chat") -> RouteRevision:
    return build_revision(*translated(objects, route_name))


def chat(backends: list[tuple[str, int]] | None = None, **spec: Any) -> Any:
    return route("chat", backends or [("a", 100)], **spec)


def mb(name: str, **spec: Any) -> Any:
    return backend(name, **spec)
