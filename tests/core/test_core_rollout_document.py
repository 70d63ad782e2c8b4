"""The rollout state as a status document: its fields, times and what a garbled one does.

Matrix: the document carries what the issue pins for `status.rollout` (phase, revisions,
step, weights, analysis, history) next to the machine's own fields; times are RFC 3339 UTC
with milliseconds only when present; a garbled document is a ValueError. (That every state the
machine reaches survives the round trip is checked on every step of every scenario, in
`core_rollout.Driver`.)
"""

from __future__ import annotations

import pytest
from core_rollout import BAD, Driver, policy, rev

from routeway.proxyconfig import Target
from routeway.rollout import effective_weights, state_from_document, state_to_document
from routeway.rollout.document import format_time, parse_time


def test_the_document_holds_the_pinned_fields() -> None:
    d = Driver(policy(), now=1767225600.0)  # 2026-01-01T00:00:00Z
    d.at(1767225600.0, desired=rev("r2"))
    d.at(1767225630.0, observations=BAD)
    weights = effective_weights((Target(backend="default/a", model="m", weight=1),), None, 0)
    doc = state_to_document(d.state, weights)
    assert doc["phase"] == "RolledBack"
    assert (doc["stableRevision"], doc["canaryRevision"], doc["currentStepIndex"]) == ("r1", "r2", 0)
    assert doc["weights"] == [{"backend": "default/a", "arm": "stable", "weight": 100.0}]
    assert doc["analysis"][0] == {
        "metric": "errorRate",
        "stable": 0.0,
        "canary": 0.3,
        "verdict": "fail",
        "max": 0.02,
        "maxRatioToStable": None,
    }
    assert doc["lastCheck"]["at"] == "2026-01-01T00:00:30Z"
    assert [(h["revision"], h["outcome"], h["at"]) for h in doc["history"]] == [
        ("r2", "rolledBack", "2026-01-01T00:00:30Z"),
        ("r1", "promoted", "2026-01-01T00:00:00Z"),
    ]
    assert doc["history"][0]["reason"].startswith("analysis check 1 failed")
    assert state_from_document(doc) == d.state


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "1970-01-01T00:00:00Z"), (1767225600.25, "2026-01-01T00:00:00.250Z"), (None, None)],
)
def test_times(seconds: float | None, text: str | None) -> None:
    assert format_time(seconds) == text
    assert parse_time(text) == seconds


@pytest.mark.parametrize("doc", [{}, {"phase": "Sideways"}, {"phase": "Stable", "stableRevision": "r1"}])
def test_a_garbled_document_is_refused(doc: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="rollout"):
        state_from_document(doc)
