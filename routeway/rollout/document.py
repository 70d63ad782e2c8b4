"""The rollout state as a JSON document: `status.rollout` in the cluster, `/rollouts` locally.

The operator keeps no rollout state anywhere but in the route's status (a restart or another
replica reads it back from there), so the document holds every field the machine needs, not
only the ones people read: the timers and the handled action tokens too. Both directions are
here so a round trip is tested once, in the core.

Times are RFC 3339 in UTC with milliseconds when there are any (`2026-01-01T00:00:05.250Z`),
converted from and to the machine's unix seconds without reading a clock. `weights` are not
state (they follow from the revisions' targets, see routeway.rollout.weights): an adapter
passes them in to be shown and they are ignored on the way back.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, cast

from routeway.rollout.analysis import Judgement, MetricResult, Verdict
from routeway.rollout.revision import RevisionRef
from routeway.rollout.state import (
    ActionKind,
    HandledAction,
    HistoryEntry,
    Outcome,
    PausedBy,
    Phase,
    RolloutState,
)
from routeway.rollout.strategy import MetricName
from routeway.rollout.weights import WeightShare

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def format_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    millis = round(seconds * 1000)
    moment = _EPOCH + datetime.timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis % 1000:03d}Z" if millis % 1000 else f"{text}Z"


def parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round((moment - _EPOCH).total_seconds() * 1000) / 1000


def state_to_document(state: RolloutState, weights: Iterable[WeightShare] = ()) -> dict[str, Any]:
    check = state.last_check
    return {
        "phase": state.phase,
        "stableRevision": state.stable.hash,
        "canaryRevision": state.canary.hash if state.canary else None,
        "currentStepIndex": state.step_index,
        "canaryWeight": state.canary_weight,
        "message": state.message,
        "weights": [w.to_json() for w in weights],
        "analysis": [_metric_to_json(m) for m in check.metrics] if check else [],
        "lastCheck": None
        if check is None
        else {
            "verdict": check.verdict,
            "at": format_time(state.last_check_at),
            "canaryRequests": check.canary_requests,
            "stableRequests": check.stable_requests,
            "minRequests": check.min_requests,
            **({"reason": check.reason} if check.reason else {}),
        },
        "failedChecks": state.failed_checks,
        "history": [
            {
                "revision": e.revision.hash,
                "outcome": e.outcome,
                "reason": e.reason,
                "at": format_time(e.at),
                "restorable": e.restorable,
                "backends": list(e.revision.backends),
            }
            for e in state.history
        ],
        "handledActions": [
            {"action": h.kind, "token": h.token, "at": format_time(h.at)} for h in state.handled
        ],
        # what only the machine reads
        "desiredRevision": state.desired,
        "stableBackends": list(state.stable.backends),
        "canaryBackends": list(state.canary.backends) if state.canary else None,
        "startedAt": format_time(state.started_at),
        "stepStartedAt": format_time(state.step_started_at),
        "deadlineAt": format_time(state.deadline_at),
        "nextCheckAt": format_time(state.next_check_at),
        "pausedBy": state.paused_by,
        "pausedAt": format_time(state.paused_at),
        "frozenAt": format_time(state.frozen_at),
    }


def state_from_document(doc: Mapping[str, Any]) -> RolloutState:
    """Parse `state_to_document`'s output; raises ValueError on anything malformed (an adapter
    then starts the route afresh from its spec rather than acting on a garbled state)."""
    try:
        return _parse(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed rollout state: {exc!r}") from exc


def _parse(doc: Mapping[str, Any]) -> RolloutState:
    phase = doc["phase"]
    if phase not in ("Stable", "Progressing", "Paused", "RolledBack"):
        raise ValueError(f"unknown rollout phase {phase!r}")
    canary_hash = doc.get("canaryRevision")
    last = doc.get("lastCheck")
    check = None
    if last is not None:
        check = Judgement(
            cast(Verdict, last["verdict"]),
            tuple(_metric_from_json(m) for m in doc.get("analysis", ())),
            int(last["canaryRequests"]),
            int(last["stableRequests"]),
            int(last["minRequests"]),
            str(last.get("reason", "")),
        )
    return RolloutState(
        phase=cast(Phase, phase),
        stable=RevisionRef(str(doc["stableRevision"]), tuple(doc.get("stableBackends") or ())),
        desired=str(doc["desiredRevision"]),
        canary=RevisionRef(str(canary_hash), tuple(doc.get("canaryBackends") or ())) if canary_hash else None,
        step_index=int(doc.get("currentStepIndex", 0)),
        canary_weight=int(doc.get("canaryWeight", 0)),
        started_at=parse_time(doc.get("startedAt")),
        step_started_at=parse_time(doc.get("stepStartedAt")),
        deadline_at=parse_time(doc.get("deadlineAt")),
        next_check_at=parse_time(doc.get("nextCheckAt")),
        failed_checks=int(doc.get("failedChecks", 0)),
        paused_by=cast(PausedBy | None, doc.get("pausedBy")),
        paused_at=parse_time(doc.get("pausedAt")),
        frozen_at=parse_time(doc.get("frozenAt")),
        last_check=check,
        last_check_at=parse_time(last.get("at")) if last else None,
        message=str(doc.get("message", "")),
        history=tuple(
            HistoryEntry(
                RevisionRef(str(e["revision"]), tuple(e.get("backends") or ())),
                cast(Outcome, e["outcome"]),
                str(e.get("reason", "")),
                _required_time(e["at"]),
                bool(e.get("restorable", True)),
            )
            for e in doc.get("history", ())
        ),
        handled=tuple(
            HandledAction(cast(ActionKind, h["action"]), str(h["token"]), _required_time(h["at"]))
            for h in doc.get("handledActions", ())
        ),
    )


def _required_time(text: str) -> float:
    parsed = parse_time(text)
    if parsed is None:
        raise ValueError("a time is missing")
    return parsed


def _metric_to_json(m: MetricResult) -> dict[str, Any]:
    return {
        "metric": m.metric,
        "stable": m.stable,
        "canary": m.canary,
        "verdict": m.verdict,
        "max": m.max,
        "maxRatioToStable": m.max_ratio_to_stable,
    }


def _metric_from_json(doc: Mapping[str, Any]) -> MetricResult:
    return MetricResult(
        cast(MetricName, doc["metric"]),
        doc.get("stable"),
        doc.get("canary"),
        cast(Verdict, doc["verdict"]),
        doc.get("max"),
        doc.get("maxRatioToStable"),
    )
