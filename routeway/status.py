"""Status of Routeway's custom resources: every condition, its reasons, and how they change.

The one place for status rules. It is pure (no clock but `now_rfc3339`, no I/O) because two
sides share it: translation imports the vocabulary and folds its findings into `Accepted` and
`ResolvedRefs` (what `routeway validate` prints), and the operator computes each object's
whole status document here and only writes it (`routeway_operator/reconcile/statuses.py`).

Rules (tests/core/test_core_status.py pins each one in a table):

- Findings fold into the two conditions translation owns: a condition is False with the
  reason of its first finding and every finding's message; ResolvedRefs is Unknown
  (NotAccepted) when the object is not accepted, as its references were never looked at.
- `Programmed` says whether the config holding the object is applied; a route whose new
  config failed stays programmed at the last good revision while that revision still serves
  its generation, and keeps the revision that first programmed its generation.
- `Ready`, `Reconciling` and `Stalled` (the kstatus trio) are derived from the others in one
  place: Ready=True only when every prerequisite is True; a failure the user must fix sets
  Stalled=True, one the operator is still working on sets Reconciling=True.
- Conditions are a list keyed by `type`, in a fixed order, each with a CamelCase `reason`,
  an integer `observedGeneration` and a `lastTransitionTime` that changes only when that
  condition's `status` flips (a new reason or message alone keeps the time).
- The document carries `observedGeneration` next to the conditions, so the write that bumps
  it is the write that flips Ready: `kubectl wait --for=condition=Ready` never sees a
  Ready=True left over from the previous generation.
- `status_changed` compares only the fields the operator owns, so an unchanged object is never
  written (a restart writes nothing); `new_failures` says which failures are new, so Events
  are posted once per transition, never on a resync.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from routeway.proxyconfig import RouteConfig
from routeway.resources import ModelGateway

Status = Literal["True", "False", "Unknown"]

# Condition types, in the order they are listed on an object.
ACCEPTED = "Accepted"  # translation: the object is valid and attached
RESOLVED_REFS = "ResolvedRefs"  # translation: everything it names exists
PROGRAMMED = "Programmed"  # operator: the config holding it is applied
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ORDER = (ACCEPTED, RESOLVED_REFS, PROGRAMMED, READY, RECONCILING, STALLED)
PROXIES_READY = "ProxiesReady"  # a gateway's prerequisite of Ready; not written itself

# Reasons (CamelCase, stable: automation matches on them). Translation's first.
REASON_ACCEPTED = "Accepted"
REASON_RESOLVED = "ResolvedRefs"
REASON_NOT_ACCEPTED = "NotAccepted"
REASON_INVALID = "Invalid"
REASON_GATEWAY_NOT_FOUND = "GatewayNotFound"
REASON_GATEWAY_INVALID = "GatewayInvalid"
REASON_NOT_ALLOWED = "NotAllowedByGateway"
REASON_MODEL_CONFLICT = "ModelNameConflict"
REASON_NO_WEIGHT = "AllWeightsZero"
REASON_AUTH_DISABLED = "AuthDisabled"
REASON_BACKEND_NOT_FOUND = "BackendNotFound"
REASON_BACKEND_INVALID = "BackendInvalid"
REASON_BACKEND_UNRESOLVED = "BackendUnresolved"
REASON_SECRET_NOT_FOUND = "SecretNotFound"
REASON_SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
# The operator's.
REASON_PROGRAMMED = "Programmed"
REASON_NOT_ATTACHED = "NotAttached"
REASON_PENDING = "Pending"
REASON_RENDER_FAILED = "RenderFailed"
REASON_APPLY_FAILED = "ApplyFailed"
REASON_PROXIES_NOT_READY = "ProxiesNotReady"
REASON_READY = "Ready"
REASON_RECONCILED = "Reconciled"
# A route's rollout (routeway.rollout_status says which): Ready=False while it runs or waits,
# Reconciling for the first two, Stalled after a rollback.
ROLLOUT = "Rollout"  # a route's prerequisite of Ready; not written itself
REASON_ROLLOUT_PROGRESSING = "RolloutProgressing"
REASON_ROLLOUT_PAUSED = "RolloutPaused"
REASON_ROLLED_BACK = "RolledBack"

# Failures the operator keeps retrying by itself (Reconciling), as opposed to Stalled.
PROGRESSING_REASONS = frozenset(
    {REASON_PENDING, REASON_PROXIES_NOT_READY, REASON_ROLLOUT_PROGRESSING, REASON_ROLLOUT_PAUSED}
)


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"


def now_rfc3339() -> str:
    """The current time as conditions and Events carry it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- translation


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem on one object: which field, a CamelCase reason, a sentence for people."""

    condition: str  # the condition type it falsifies: Accepted or ResolvedRefs
    reason: str
    field: str
    message: str


def accepted() -> Condition:
    return Condition(ACCEPTED, "True", REASON_ACCEPTED)


def resolved() -> Condition:
    return Condition(RESOLVED_REFS, "True", REASON_RESOLVED)


def conditions_from_findings(findings: Sequence[Finding]) -> tuple[Condition, Condition]:
    """Accepted and ResolvedRefs from an object's findings; messages list every problem."""
    rejections = [f for f in findings if f.condition == ACCEPTED]
    unresolved = [f for f in findings if f.condition == RESOLVED_REFS]
    if unresolved:
        refs = _failed(RESOLVED_REFS, unresolved)
    elif rejections:
        refs = Condition(RESOLVED_REFS, "Unknown", REASON_NOT_ACCEPTED, "the object is not accepted")
    else:
        refs = resolved()
    return (_failed(ACCEPTED, rejections) if rejections else accepted()), refs


def _failed(ctype: str, findings: Sequence[Finding]) -> Condition:
    return Condition(ctype, "False", findings[0].reason, "; ".join(f.message for f in findings))


def translated(conditions: Iterable[Condition]) -> tuple[Condition, Condition]:
    """Accepted and ResolvedRefs from translation's conditions for one object (Unknown while
    the object was not part of a translation)."""
    by_type = {c.type: c for c in conditions}
    pending = "not translated yet"
    return (
        by_type.get(ACCEPTED, Condition(ACCEPTED, "Unknown", REASON_PENDING, pending)),
        by_type.get(RESOLVED_REFS, Condition(RESOLVED_REFS, "Unknown", REASON_PENDING, pending)),
    )


# ---------------------------------------------------------------------------- Programmed, kstatus


@dataclass(frozen=True)
class Outcome:
    """What happened to a gateway's config in this reconcile, as routes and the gateway see it."""

    revision: str | None  # the revision now in the ConfigMap (None: nothing applied yet)
    programmed: Condition  # the gateway's Programmed condition


def programmed(revision: str, what: str) -> Condition:
    return Condition(PROGRAMMED, "True", REASON_PROGRAMMED, f"config revision {revision} {what}")


def not_programmed(reason: str, message: str) -> Condition:
    return Condition(PROGRAMMED, "False", reason, message)


def summarize(prerequisites: Sequence[Condition]) -> tuple[Condition, Condition, Condition]:
    """Ready, Reconciling and Stalled from the conditions Ready depends on (in order): the
    first one not True explains all three."""
    failing = next((c for c in prerequisites if c.status != "True"), None)
    if failing is None:
        return (
            Condition(READY, "True", REASON_READY, ""),
            Condition(RECONCILING, "False", REASON_RECONCILED, ""),
            Condition(STALLED, "False", REASON_RECONCILED, ""),
        )
    message = (
        f"{failing.type}: {failing.message}" if failing.message else f"{failing.type} is {failing.status}"
    )
    ready = Condition(READY, "False", failing.reason, message)
    if failing.reason in PROGRESSING_REASONS:
        return (
            ready,
            Condition(RECONCILING, "True", failing.reason, message),
            Condition(STALLED, "False", REASON_RECONCILED, ""),
        )
    return (
        ready,
        Condition(RECONCILING, "False", REASON_RECONCILED, ""),
        Condition(STALLED, "True", failing.reason, message),
    )


def with_kstatus(conditions: Sequence[Condition]) -> list[Condition]:
    """Append Ready/Reconciling/Stalled derived from `conditions` (all of them prerequisites)."""
    return [*conditions, *summarize(conditions)]


# ---------------------------------------------------------------------------- condition lists


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    desired: Sequence[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Condition dicts for `desired`, keeping `lastTransitionTime` where the status did not flip."""
    previous = {c.get("type"): c for c in existing or () if isinstance(c, Mapping)}
    out = []
    for cond in sorted(desired, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER)):
        before = previous.get(cond.type)
        same = before is not None and before.get("status") == cond.status and before.get("lastTransitionTime")
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation if generation is not None else 0,
                "lastTransitionTime": before["lastTransitionTime"] if same and before else now,
            }
        )
    return out


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when any field the operator owns differs (None in `desired` means: absent, at any
    depth: a merge patch deletes a key written as null, so the server's copy lacks it)."""
    current = current or {}
    return any(_compact(current.get(key)) != _compact(value) for key, value in desired.items())


def _compact(value: Any) -> Any:
    """`value` without None-valued keys in any mapping, however deep."""
    if isinstance(value, Mapping):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    return value


def flipped_to_false(existing: Iterable[Mapping[str, Any]] | None, cond: Condition) -> bool:
    """Whether `cond` is a new failure (for events): it is False now and was not before, or
    its reason changed."""
    if cond.status == "True":
        return False
    before = {c.get("type"): c for c in existing or () if isinstance(c, Mapping)}.get(cond.type)
    return before is None or before.get("status") != cond.status or before.get("reason") != cond.reason


ANNOUNCED = (ACCEPTED, RESOLVED_REFS, PROGRAMMED)
"""Conditions whose new failures are worth a Warning Event; Ready and the rest only repeat them."""
QUIET_REASONS = frozenset({REASON_PENDING, REASON_NOT_ATTACHED})
"""Failures not announced: transient, or already explained by Accepted."""


def new_failures(
    existing: Iterable[Mapping[str, Any]] | None, desired: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The condition dicts of `desired` that deserve a Warning Event: an announced condition
    that just turned False (or changed its reason), for a reason that is not quiet."""
    existing = list(existing or ())
    return [
        cond
        for cond in desired
        if cond["type"] in ANNOUNCED
        and cond["status"] == "False"
        and cond["reason"] not in QUIET_REASONS
        and flipped_to_false(existing, Condition(cond["type"], "False", cond["reason"], cond["message"]))
    ]


def backend_weights(targets: Iterable[tuple[str, int]]) -> str:
    """`llama-v1=90,llama-v2=10` from (backend name, weight) pairs, in route order."""
    return ",".join(f"{name}={weight}" for name, weight in targets)


# ---------------------------------------------------------------------------- documents


class Observed(Protocol):
    """An object as last seen (the operator's index entry): what its new status is computed
    against, so unchanged conditions keep their times and revisions."""

    @property
    def generation(self) -> int | None: ...

    @property
    def status(self) -> Mapping[str, Any]: ...


def route_status(
    route: Observed,
    conditions: Iterable[Condition],
    gateway: tuple[str, str] | None,
    rendered: RouteConfig | None,
    outcome: Outcome,
    now: str,
    rollout: Condition | None = None,
    serving: int | None = None,
) -> dict[str, Any]:
    """`conditions`: translation's for this route; `gateway`: the one it is attached to;
    `rendered`: this route in the config just applied (None when absent or not applied);
    `rollout`: the route's rollout as a prerequisite of Ready (routeway.rollout_status), not
    listed itself: Ready, Reconciling and Stalled say it; `serving`: the older generation
    served in place of this one, whose version has a problem (routeway.lastgood)."""
    accepted, resolved = translated(conditions)
    wanted = route.generation if serving is None else serving
    older = "" if serving is None else " (the last good one)"
    previous = route.status
    same_generation = previous.get("observedGeneration") == route.generation
    weights: str | None = None
    revision: str | None = None
    if gateway is None:
        programmed_ = not_programmed(REASON_NOT_ATTACHED, "the route is not attached to a gateway")
    elif outcome.programmed.status != "True":
        if (
            outcome.revision is not None
            and previous.get("configRevision") == outcome.revision
            and same_generation
        ):
            # The new config could not be applied, but the last good one (still in the
            # ConfigMap) serves this very generation: the route stays programmed at it.
            revision, weights = outcome.revision, previous.get("backendWeights")
            programmed_ = programmed(revision, f"serves generation {route.generation}")
        else:
            programmed_ = not_programmed(outcome.programmed.reason, outcome.programmed.message)
    elif rendered is None or rendered.generation != wanted:
        programmed_ = not_programmed(REASON_PENDING, "waiting for the gateway's config to be rendered")
    else:
        weights = backend_weights((t.backend.split("/", 1)[1], t.weight) for t in rendered.targets)
        revision = outcome.revision or ""
        # The revision that first programmed this generation stays (in the field and in the
        # message), so another route's change does not rewrite every route's status.
        if previous.get("configRevision") and same_generation and previous.get("backendWeights") == weights:
            revision = previous["configRevision"]
        programmed_ = programmed(revision, f"serves generation {wanted}{older}")
    listed = [accepted, resolved, programmed_]
    prerequisites = [*listed, rollout] if rollout is not None else listed
    return {
        "observedGeneration": route.generation,
        "conditions": merge_conditions(
            previous.get("conditions"), [*listed, *summarize(prerequisites)], route.generation, now
        ),
        "backendWeights": weights,
        "gateway": f"{gateway[0]}/{gateway[1]}" if gateway else None,
        "configRevision": revision,
    }


def backend_status(
    backend: Observed, conditions: Iterable[Condition], routes: int, now: str
) -> dict[str, Any]:
    """`routes`: how many routes name this backend."""
    desired = with_kstatus(translated(conditions))
    return {
        "observedGeneration": backend.generation,
        "conditions": merge_conditions(backend.status.get("conditions"), desired, backend.generation, now),
        "routes": routes,
    }


def gateway_status(
    gateway: Observed,
    model: ModelGateway | None,
    conditions: Iterable[Condition],
    outcome: Outcome,
    *,
    deployment: Mapping[str, Any] | None,
    address: str | None,
    routes: int,
    now: str,
    proxies_current: int | None = None,
) -> dict[str, Any]:
    """`model`: the parsed gateway (None: invalid); `deployment`: its proxy Deployment's
    generation and status; `routes`: how many routes are attached to it; `proxies_current`: how many
    ready proxy pods serve `outcome.revision` (None: not read, the field is left as it is)."""
    accepted, resolved = translated(conditions)
    programmed_ = (
        outcome.programmed
        if model is not None
        else not_programmed(REASON_NOT_ATTACHED, "the gateway is not accepted")
    )
    desired = model.spec.replicas if model is not None else 0
    dep_status = (deployment or {}).get("status") or {}
    ready = int(dep_status.get("readyReplicas") or 0)
    replicas = int(dep_status.get("replicas") or 0)
    rollout_done = (
        deployment is not None
        and (deployment.get("metadata") or {}).get("generation") == dep_status.get("observedGeneration")
        and ready >= desired
    )
    proxies = (
        Condition(PROXIES_READY, "True", REASON_READY, "")
        if rollout_done or desired == 0
        else Condition(
            PROXIES_READY, "False", REASON_PROXIES_NOT_READY, f"{ready} of {desired} proxy pods are ready"
        )
    )
    # ProxiesReady gates Ready but is not listed: the replica counts say the same.
    listed = [accepted, resolved, programmed_, *summarize([accepted, resolved, programmed_, proxies])]
    return {
        "observedGeneration": gateway.generation,
        "conditions": merge_conditions(gateway.status.get("conditions"), listed, gateway.generation, now),
        "replicas": replicas,
        "readyReplicas": ready,
        "address": address,
        "configRevision": outcome.revision,
        "routes": routes,
        **({"proxies": proxies_current} if proxies_current is not None else {}),
    }
