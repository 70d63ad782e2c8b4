"""Pure status computation: conditions as `kubectl wait`, kstatus, Argo CD and Flux read them.

Rules this module guarantees (tests/operator/test_operator_status.py):

- Conditions are a list keyed by `type`, in a fixed order, each with CamelCase `reason`,
  integer `observedGeneration` and `lastTransitionTime`, which changes only when that
  condition's `status` flips (a new reason or message alone keeps the time).
- `Ready`, `Reconciling` and `Stalled` (the kstatus trio) are derived from the others in one
  place: Ready=True only when every prerequisite is True; a failure the user must fix sets
  Stalled=True, one the operator is still working on sets Reconciling=True.
- The status document carries `observedGeneration` next to the conditions, so the write that
  bumps it is the write that flips Ready — `kubectl wait --for=condition=Ready` never sees a
  Ready=True left over from the previous generation.
- `status_changed` compares only the fields the operator owns, so an unchanged object is
  never written (a restart writes nothing).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeway.conditions import ACCEPTED, RESOLVED_REFS, Condition

PROGRAMMED = "Programmed"
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ORDER = (ACCEPTED, RESOLVED_REFS, PROGRAMMED, READY, RECONCILING, STALLED)

# Reasons of the conditions the operator adds (translation owns Accepted/ResolvedRefs reasons).
REASON_PROGRAMMED = "Programmed"
REASON_NOT_ATTACHED = "NotAttached"
REASON_PENDING = "Pending"
REASON_RENDER_FAILED = "RenderFailed"
REASON_APPLY_FAILED = "ApplyFailed"
REASON_PROXIES_NOT_READY = "ProxiesNotReady"
REASON_READY = "Ready"
REASON_RECONCILED = "Reconciled"

# Failures the operator keeps retrying by itself (Reconciling), as opposed to Stalled.
PROGRESSING_REASONS = frozenset({REASON_PENDING, REASON_PROXIES_NOT_READY})


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """Ready, Reconciling and Stalled from the conditions Ready depends on (in order)."""
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
    """True when any field the operator owns differs (None in `desired` means: absent)."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())


def flipped_to_false(existing: Iterable[Mapping[str, Any]] | None, cond: Condition) -> bool:
    """Whether `cond` is a new failure (for events): it is False now and was not before, or
    its reason changed."""
    if cond.status == "True":
        return False
    before = {c.get("type"): c for c in existing or () if isinstance(c, Mapping)}.get(cond.type)
    return before is None or before.get("status") != cond.status or before.get("reason") != cond.reason


def backend_weights(targets: Iterable[tuple[str, int]]) -> str:
    """`llama-v1=90,llama-v2=10` from (backend name, weight) pairs, in route order."""
    return ",".join(f"{name}={weight}" for name, weight in targets)
