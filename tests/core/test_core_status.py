"""Every status rule of `routeway.status`, as tables: one row per case, the rule in its name.

Matrix: translation findings → Accepted/ResolvedRefs (none, one, several, both kinds, not
accepted) / the kstatus trio (all true, progressing, stalled, Unknown, first failure wins) /
condition merging (lastTransitionTime only on flips, observedGeneration on every condition,
fixed order) / new failures worth an Event / route documents (not attached, pending, programmed,
revision kept, last good config kept, apply failed) / gateway documents (proxies ready or not,
rollout unfinished, no replicas, invalid gateway) / backend documents / change detection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from routeway import status as st
from routeway.proxyconfig import RouteConfig
from routeway.resources import ModelGateway
from routeway.status import Condition, Finding

NOW = "2026-05-04T10:00:00Z"
BEFORE = "2026-05-01T08:00:00Z"


def f(condition: str, reason: str, message: str = "m") -> Finding:
    return Finding(condition, reason, "spec.x", message)


def trio(conditions: list[Condition]) -> tuple[tuple[str, str], ...]:
    return tuple((c.status, c.reason) for c in st.summarize(conditions))


# ------------------------------------------------------------------ findings → conditions

ACC = st.ACCEPTED
REF = st.RESOLVED_REFS

FINDINGS = [
    # (case, findings, (Accepted status, reason, message), (ResolvedRefs status, reason, message))
    ("no findings: both True", [], ("True", "Accepted", ""), ("True", "ResolvedRefs", "")),
    (
        "a rejection: ResolvedRefs Unknown, as references were not looked at",
        [f(ACC, st.REASON_GATEWAY_NOT_FOUND, "no gw")],
        ("False", "GatewayNotFound", "no gw"),
        ("Unknown", "NotAccepted", "the object is not accepted"),
    ),
    (
        "several rejections: the first reason, every message",
        [f(ACC, st.REASON_INVALID, "bad"), f(ACC, st.REASON_NO_WEIGHT, "zero")],
        ("False", "Invalid", "bad; zero"),
        ("Unknown", "NotAccepted", "the object is not accepted"),
    ),
    (
        "a missing reference alone: still accepted",
        [f(REF, st.REASON_BACKEND_NOT_FOUND, "no a"), f(REF, st.REASON_SECRET_NOT_FOUND, "no s")],
        ("True", "Accepted", ""),
        ("False", "BackendNotFound", "no a; no s"),
    ),
    (
        "both kinds: each condition its own findings",
        [f(REF, st.REASON_BACKEND_INVALID, "b"), f(ACC, st.REASON_MODEL_CONFLICT, "c")],
        ("False", "ModelNameConflict", "c"),
        ("False", "BackendInvalid", "b"),
    ),
]


@pytest.mark.parametrize(("case", "findings", "accepted", "resolved"), FINDINGS, ids=[r[0] for r in FINDINGS])
def test_findings_fold_into_accepted_and_resolved_refs(
    case: str, findings: list[Finding], accepted: tuple[str, ...], resolved: tuple[str, ...]
) -> None:
    got = st.conditions_from_findings(findings)
    assert [(c.type, c.status, c.reason, c.message) for c in got] == [(ACC, *accepted), (REF, *resolved)]


def test_untranslated_objects_are_pending() -> None:
    accepted, resolved = st.translated(())
    assert (accepted.status, accepted.reason, resolved.status, resolved.reason) == (
        "Unknown",
        "Pending",
        "Unknown",
        "Pending",
    )
    assert st.translated([st.accepted(), st.resolved()]) == (st.accepted(), st.resolved())


# ------------------------------------------------------------------ kstatus trio

OK = [st.accepted(), st.resolved()]
TRIO = [
    # (case, prerequisites, ((Ready), (Reconciling), (Stalled)) as (status, reason))
    ("all True: Ready", OK, (("True", "Ready"), ("False", "Reconciled"), ("False", "Reconciled"))),
    (
        "Pending: the operator is working on it",
        [*OK, st.not_programmed(st.REASON_PENDING, "later")],
        (("False", "Pending"), ("True", "Pending"), ("False", "Reconciled")),
    ),
    (
        "proxies starting: Reconciling",
        [*OK, Condition(st.PROXIES_READY, "False", st.REASON_PROXIES_NOT_READY, "1 of 2")],
        (("False", "ProxiesNotReady"), ("True", "ProxiesNotReady"), ("False", "Reconciled")),
    ),
    (
        "a user's mistake: Stalled",
        [Condition(REF, "False", st.REASON_BACKEND_NOT_FOUND, "x")],
        (("False", "BackendNotFound"), ("False", "Reconciled"), ("True", "BackendNotFound")),
    ),
    (
        "apply failed: Stalled",
        [*OK, st.not_programmed(st.REASON_APPLY_FAILED, "not ours")],
        (("False", "ApplyFailed"), ("False", "Reconciled"), ("True", "ApplyFailed")),
    ),
    (
        "not translated yet: Unknown counts as not True, and is progressing",
        list(st.translated(())),
        (("False", "Pending"), ("True", "Pending"), ("False", "Reconciled")),
    ),
    (
        "the first failing prerequisite explains all three",
        [
            Condition(ACC, "False", st.REASON_INVALID, "bad"),
            Condition(REF, "Unknown", st.REASON_NOT_ACCEPTED, ""),
            st.not_programmed(st.REASON_PENDING, "later"),
        ],
        (("False", "Invalid"), ("False", "Reconciled"), ("True", "Invalid")),
    ),
]


@pytest.mark.parametrize(("case", "prerequisites", "expected"), TRIO, ids=[r[0] for r in TRIO])
def test_kstatus_trio_table(
    case: str, prerequisites: list[Condition], expected: tuple[tuple[str, str], ...]
) -> None:
    assert trio(prerequisites) == expected


def test_trio_messages_name_the_failing_condition() -> None:
    ready, _, stalled = st.summarize([Condition(ACC, "False", st.REASON_INVALID, "bad spec")])
    assert ready.message == stalled.message == "Accepted: bad spec"
    ready, _, _ = st.summarize([Condition(REF, "Unknown", st.REASON_NOT_ACCEPTED, "")])
    assert ready.message == "ResolvedRefs is Unknown"


def test_kstatus_trio() -> None:
    ok = Condition("Accepted", "True", "Accepted")
    ready, reconciling, stalled = st.summarize([ok])
    assert (ready.status, reconciling.status, stalled.status) == ("True", "False", "False")
    ready, reconciling, stalled = st.summarize([ok, st.not_programmed(st.REASON_PENDING, "later")])
    assert (ready.status, reconciling.status, stalled.status) == ("False", "True", "False")
    assert ready.reason == "Pending"
    ready, reconciling, stalled = st.summarize([Condition("ResolvedRefs", "False", "BackendNotFound", "x")])
    assert (ready.status, reconciling.status, stalled.status) == ("False", "False", "True")
    assert stalled.reason == "BackendNotFound"


# ------------------------------------------------------------------ merging conditions

TRANSITIONS = [
    # (case, condition before (None: absent), condition now, lastTransitionTime expected)
    ("new condition: now", None, Condition(ACC, "True", "Accepted"), NOW),
    ("same status: kept", ("True", "Accepted", BEFORE), Condition(ACC, "True", "Accepted"), BEFORE),
    (
        "same status, new reason and message: kept",
        ("False", "Invalid", BEFORE),
        Condition(ACC, "False", "GatewayNotFound", "other"),
        BEFORE,
    ),
    ("True → False: now", ("True", "Accepted", BEFORE), Condition(ACC, "False", "Invalid", "m"), NOW),
    ("False → True: now", ("False", "Invalid", BEFORE), Condition(ACC, "True", "Accepted"), NOW),
    ("Unknown → False: now", ("Unknown", "Pending", BEFORE), Condition(ACC, "False", "Invalid"), NOW),
    ("before had no time: now", ("True", "Accepted", ""), Condition(ACC, "True", "Accepted"), NOW),
]


@pytest.mark.parametrize(("case", "before", "now", "expected"), TRANSITIONS, ids=[r[0] for r in TRANSITIONS])
def test_last_transition_time_table(
    case: str, before: tuple[str, str, str] | None, now: Condition, expected: str
) -> None:
    existing = (
        None
        if before is None
        else [{"type": now.type, "status": before[0], "reason": before[1], "lastTransitionTime": before[2]}]
    )
    (merged,) = st.merge_conditions(existing, [now], 4, NOW)
    assert merged == {
        "type": now.type,
        "status": now.status,
        "reason": now.reason,
        "message": now.message,
        "observedGeneration": 4,
        "lastTransitionTime": expected,
    }


def test_last_transition_time_changes_only_on_flips() -> None:
    first = st.merge_conditions(None, [Condition("Accepted", "True", "Accepted", "")], 1, "t1")
    assert first == [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "",
            "observedGeneration": 1,
            "lastTransitionTime": "t1",
        }
    ]
    same = st.merge_conditions(first, [Condition("Accepted", "True", "Other", "m")], 2, "t2")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["observedGeneration"] == 2
    flipped = st.merge_conditions(same, [Condition("Accepted", "False", "Invalid", "m")], 2, "t3")
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_merged_conditions_are_ordered_and_carry_an_integer_generation() -> None:
    shuffled = [Condition("Custom", "True", "X"), *reversed(st.with_kstatus(OK))]
    merged = st.merge_conditions(None, shuffled, None, NOW)
    assert [c["type"] for c in merged] == [
        "Accepted",
        "ResolvedRefs",
        "Ready",
        "Reconciling",
        "Stalled",
        "Custom",
    ]
    assert {c["observedGeneration"] for c in merged} == {0}


def test_conditions_are_ordered_and_events_fire_on_new_failures() -> None:
    conds = st.merge_conditions(
        None,
        st.with_kstatus([Condition("ResolvedRefs", "True", "R"), Condition("Accepted", "True", "A")]),
        1,
        "t",
    )
    assert [c["type"] for c in conds] == ["Accepted", "ResolvedRefs", "Ready", "Reconciling", "Stalled"]
    failing = Condition("Accepted", "False", "Invalid", "bad")
    assert st.flipped_to_false(conds, failing)
    again = st.merge_conditions(conds, [failing], 1, "t")
    assert not st.flipped_to_false(again, failing)
    assert st.backend_weights([("v1", 90), ("v2", 10)]) == "v1=90,v2=10"


# ------------------------------------------------------------------ events

ANNOUNCE = [
    # (case, condition before (type, status, reason) or None, condition now, announced)
    ("new failure", (ACC, "True", "Accepted"), Condition(ACC, "False", "Invalid", "bad"), True),
    ("first seen failing", None, Condition(REF, "False", "BackendNotFound", "x"), True),
    (
        "still failing, same reason",
        (ACC, "False", "Invalid"),
        Condition(ACC, "False", "Invalid", "m2"),
        False,
    ),
    (
        "still failing, new reason",
        (ACC, "False", "Invalid"),
        Condition(ACC, "False", "ModelNameConflict"),
        True,
    ),
    ("Programmed failing", None, st.not_programmed(st.REASON_APPLY_FAILED, "m"), True),
    ("Pending is transient", None, st.not_programmed(st.REASON_PENDING, "m"), False),
    ("NotAttached is explained by Accepted", None, st.not_programmed(st.REASON_NOT_ATTACHED, "m"), False),
    ("Ready repeats the others", None, Condition(st.READY, "False", "Invalid", "m"), False),
    ("Unknown is no failure", None, Condition(REF, "Unknown", "NotAccepted", "m"), False),
    ("True is no failure", (ACC, "False", "Invalid"), Condition(ACC, "True", "Accepted"), False),
]


@pytest.mark.parametrize(("case", "before", "now", "announced"), ANNOUNCE, ids=[r[0] for r in ANNOUNCE])
def test_new_failures_table(
    case: str, before: tuple[str, str, str] | None, now: Condition, announced: bool
) -> None:
    existing = None if before is None else [dict(zip(("type", "status", "reason"), before, strict=True))]
    desired = st.merge_conditions(None, [now], 1, NOW)
    assert bool(st.new_failures(existing, desired)) is announced


# ------------------------------------------------------------------ documents


@dataclass(frozen=True)
class Seen:
    generation: int | None = 2
    status: Mapping[str, Any] = field(default_factory=dict)


def rendered_route(generation: int | None = 2, weights: tuple[int, int] = (90, 10)) -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "id": "ml/chat",
            "namespace": "ml",
            "name": "chat",
            "model": "chat",
            "generation": generation,
            "targets": [
                {"backend": "ml/v1", "model": "chat", "weight": weights[0]},
                {"backend": "ml/v2", "model": "chat", "weight": weights[1]},
            ],
            "retries": {"attempts": 1},
        }
    )


APPLIED = st.Outcome("rev-new", st.programmed("rev-new", "is applied"))
FAILED = st.Outcome("rev-old", st.not_programmed(st.REASON_APPLY_FAILED, "not owned"))
SERVED_OLD = {"observedGeneration": 2, "configRevision": "rev-old", "backendWeights": "v1=50,v2=50"}
GW = ("ml", "gw")

ROUTES: list[tuple[str, Seen, tuple[str, str] | None, RouteConfig | None, st.Outcome, tuple[Any, ...]]] = [
    # (case, route as seen, attached gateway, rendered route, outcome,
    #  (Programmed status, reason, configRevision, backendWeights))
    ("not attached", Seen(), None, None, APPLIED, ("False", "NotAttached", None, None)),
    (
        "applied and rendered: programmed",
        Seen(),
        GW,
        rendered_route(),
        APPLIED,
        ("True", "Programmed", "rev-new", "v1=90,v2=10"),
    ),
    (
        "rendered at an older generation: pending",
        Seen(),
        GW,
        rendered_route(1),
        APPLIED,
        ("False", "Pending", None, None),
    ),
    ("absent from the config: pending", Seen(), GW, None, APPLIED, ("False", "Pending", None, None)),
    (
        "same generation and weights: the first revision stays",
        Seen(status={**SERVED_OLD, "backendWeights": "v1=90,v2=10"}),
        GW,
        rendered_route(),
        APPLIED,
        ("True", "Programmed", "rev-old", "v1=90,v2=10"),
    ),
    (
        "new weights: the new revision",
        Seen(status=SERVED_OLD),
        GW,
        rendered_route(),
        APPLIED,
        ("True", "Programmed", "rev-new", "v1=90,v2=10"),
    ),
    (
        "apply failed, the last good config serves this generation: still programmed",
        Seen(status=SERVED_OLD),
        GW,
        None,
        FAILED,
        ("True", "Programmed", "rev-old", "v1=50,v2=50"),
    ),
    (
        "apply failed, a newer generation: the gateway's failure",
        Seen(generation=3, status=SERVED_OLD),
        GW,
        None,
        FAILED,
        ("False", "ApplyFailed", None, None),
    ),
]


@pytest.mark.parametrize(
    ("case", "seen", "gateway", "rendered", "outcome", "expected"), ROUTES, ids=[r[0] for r in ROUTES]
)
def test_route_status_table(
    case: str,
    seen: Seen,
    gateway: tuple[str, str] | None,
    rendered: RouteConfig | None,
    outcome: st.Outcome,
    expected: tuple[Any, ...],
) -> None:
    doc = st.route_status(seen, OK, gateway, rendered, outcome, NOW)
    programmed = {c["type"]: c for c in doc["conditions"]}[st.PROGRAMMED]
    assert (
        programmed["status"],
        programmed["reason"],
        doc["configRevision"],
        doc["backendWeights"],
    ) == expected
    assert doc["observedGeneration"] == seen.generation
    assert doc["gateway"] == (f"{gateway[0]}/{gateway[1]}" if gateway else None)
    assert [c["type"] for c in doc["conditions"]] == list(st.ORDER)
    ready = {c["type"]: c for c in doc["conditions"]}[st.READY]
    assert ready["status"] == programmed["status"]  # Accepted and ResolvedRefs are True here


def deployment(generation: int, observed: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "replicas": 2},
    }


def gateway(replicas: int = 2) -> ModelGateway:
    return ModelGateway.model_validate(
        {"metadata": {"name": "gw", "namespace": "ml"}, "spec": {"replicas": replicas}}
    )


GATEWAYS: list[tuple[str, ModelGateway | None, dict[str, Any] | None, tuple[str, str]]] = [
    # (case, parsed gateway, its Deployment, (Ready status, reason))
    ("proxies ready", gateway(), deployment(3, 3, 2), ("True", "Ready")),
    ("proxies starting", gateway(), deployment(3, 3, 1), ("False", "ProxiesNotReady")),
    ("rollout not observed yet", gateway(), deployment(4, 3, 2), ("False", "ProxiesNotReady")),
    ("no Deployment yet", gateway(), None, ("False", "ProxiesNotReady")),
    ("zero replicas need no pods", gateway(0), None, ("True", "Ready")),
    ("invalid gateway: not programmed", None, None, ("False", "NotAttached")),
]


@pytest.mark.parametrize(("case", "model", "dep", "expected"), GATEWAYS, ids=[r[0] for r in GATEWAYS])
def test_gateway_status_table(
    case: str, model: ModelGateway | None, dep: dict[str, Any] | None, expected: tuple[str, str]
) -> None:
    doc = st.gateway_status(Seen(), model, OK, APPLIED, deployment=dep, address="http://a", routes=3, now=NOW)
    by_type = {c["type"]: c for c in doc["conditions"]}
    assert (by_type[st.READY]["status"], by_type[st.READY]["reason"]) == expected
    assert st.PROXIES_READY not in by_type  # a prerequisite of Ready, never written
    assert (doc["routes"], doc["address"], doc["configRevision"]) == (3, "http://a", "rev-new")
    assert doc["readyReplicas"] == ((dep or {}).get("status") or {}).get("readyReplicas", 0)


def test_backend_status_counts_routes_and_has_no_programmed() -> None:
    doc = st.backend_status(Seen(generation=5), OK, 2, NOW)
    assert doc["routes"] == 2 and doc["observedGeneration"] == 5
    assert [c["type"] for c in doc["conditions"]] == [ACC, REF, st.READY, st.RECONCILING, st.STALLED]


def test_an_unchanged_document_is_not_written_again() -> None:
    first = st.route_status(Seen(), OK, GW, rendered_route(), APPLIED, NOW)
    again = st.route_status(Seen(status=first), OK, GW, rendered_route(), APPLIED, "2026-06-01T00:00:00Z")
    assert again == first and not st.status_changed(first, again)
    assert st.status_changed(first, {**first, "configRevision": "other"})
    assert st.status_changed(None, {"gateway": "ml/gw"})
    assert not st.status_changed({"gateway": "ml/gw", "extra": 1}, {"gateway": "ml/gw"})
