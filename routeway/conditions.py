"""Per-object verdicts of translation, in the shape Kubernetes status conditions take.

Translation only decides `Accepted` (the object is valid and attached) and `ResolvedRefs`
(everything it names exists). The operator adds `Programmed`, `Ready`, `Reconciling` and
`Stalled` once it knows what was applied; `routeway validate` prints the failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["True", "False", "Unknown"]

ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"

# Reasons (CamelCase, stable: automation matches on them).
REASON_ACCEPTED = "Accepted"
REASON_RESOLVED = "ResolvedRefs"
REASON_INVALID = "Invalid"
REASON_GATEWAY_NOT_FOUND = "GatewayNotFound"
REASON_GATEWAY_INVALID = "GatewayInvalid"
REASON_NOT_ALLOWED = "NotAllowedByGateway"
REASON_MODEL_CONFLICT = "ModelNameConflict"
REASON_NO_WEIGHT = "AllWeightsZero"
REASON_BACKEND_NOT_FOUND = "BackendNotFound"
REASON_BACKEND_INVALID = "BackendInvalid"
REASON_BACKEND_UNRESOLVED = "BackendUnresolved"
REASON_SECRET_NOT_FOUND = "SecretNotFound"
REASON_SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"


def accepted() -> Condition:
    return Condition(ACCEPTED, "True", REASON_ACCEPTED, "")


def not_accepted(reason: str, message: str) -> Condition:
    return Condition(ACCEPTED, "False", reason, message)


def resolved() -> Condition:
    return Condition(RESOLVED_REFS, "True", REASON_RESOLVED, "")


def unresolved(reason: str, message: str) -> Condition:
    return Condition(RESOLVED_REFS, "False", reason, message)
