"""A ModelClient's status document and usage (routeway.client_status, routeway.client_usage).

Matrix: Programmed by attachment, listed in the config, the gateway's outcome, what was
written for this generation before; models text; usage parsed (good and malformed /usage
documents), summed over pods (same window, a pod already in the next minute, a window over,
mixed currencies), costs as decimals, unchanged numbers keep the previous document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from routeway.client_status import client_status, models_text
from routeway.client_usage import (
    ClientUsage,
    Window,
    format_cost,
    settle_usage,
    sum_usage,
    usage_document,
    usage_from_json,
)
from routeway.resources import ModelClient
from routeway.status import (
    Condition,
    Outcome,
    accepted,
    merge_conditions,
    not_programmed,
    programmed,
    resolved,
)

NOW = "2026-05-04T10:02:07Z"
GOOD = Outcome("rev-2", programmed("rev-2", "is applied"))
FAILED = Outcome("rev-1", not_programmed("ApplyFailed", "the API said no"))


@dataclass
class Seen:
    generation: int | None
    status: dict[str, Any] = field(default_factory=dict)


def model(**spec: Any) -> ModelClient:
    return ModelClient.model_validate(
        {
            "metadata": {"name": "search-team", "namespace": "default"},
            "spec": {"keySecretRef": {"name": "k", "key": "api-key"}, **spec},
        }
    )


def written(generation: int, programmed_: Condition) -> dict[str, Any]:
    conditions = [accepted(), resolved(), programmed_]
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(None, conditions, generation, NOW),
    }


def by_type(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in doc["conditions"]}


PROGRAMMED_AT_REV_1 = programmed("rev-1", "holds generation 3")


@pytest.mark.parametrize(
    ("attached", "listed", "outcome", "before", "expected", "message"),
    [
        (False, False, GOOD, {}, ("False", "NotAttached"), "not attached"),
        (True, True, GOOD, {}, ("True", "Programmed"), "config revision rev-2 holds generation 3"),
        (True, False, GOOD, {}, ("False", "Pending"), "waiting"),
        # another object's change: the revision that first programmed this generation stays
        (True, True, GOOD, written(3, PROGRAMMED_AT_REV_1), ("True", "Programmed"), "rev-1"),
        # a new generation is programmed by the new revision
        (True, True, GOOD, written(2, PROGRAMMED_AT_REV_1), ("True", "Programmed"), "rev-2"),
        # the new config failed, the last good one still holds this generation
        (True, True, FAILED, written(3, PROGRAMMED_AT_REV_1), ("True", "Programmed"), "rev-1"),
        (True, True, FAILED, written(2, PROGRAMMED_AT_REV_1), ("False", "ApplyFailed"), "the API said no"),
        (True, True, FAILED, {}, ("False", "ApplyFailed"), "the API said no"),
    ],
)
def test_programmed_table(
    attached: bool,
    listed: bool,
    outcome: Outcome,
    before: dict[str, Any],
    expected: tuple[str, str],
    message: str,
) -> None:
    doc = client_status(
        Seen(3, before),
        model(),
        [accepted(), resolved()],
        ("default", "gw") if attached else None,
        listed,
        outcome,
        NOW,
    )
    programmed_ = next(c for c in doc["conditions"] if c["type"] == "Programmed")
    assert (programmed_["status"], programmed_["reason"]) == expected
    assert message in programmed_["message"]
    assert doc["observedGeneration"] == 3
    ready = by_type(doc)["Ready"]
    assert ready[0] == ("True" if expected[0] == "True" else "False")


def test_trio_and_fields() -> None:
    pending = client_status(Seen(1), model(), [accepted(), resolved()], ("default", "gw"), False, GOOD, NOW)
    assert by_type(pending)["Reconciling"] == ("True", "Pending")
    auth_disabled = Condition("Accepted", "False", "AuthDisabled", "no spec.auth")
    rejected = client_status(Seen(1), model(models=["chat"]), [auth_disabled], None, False, GOOD, NOW)
    assert by_type(rejected)["Stalled"] == ("True", "AuthDisabled")
    assert rejected["gateway"] is None and rejected["models"] == "chat"
    assert rejected["usage"] is None  # cleared: a client no longer attached shows no usage
    usage = {"minute": None, "day": None, "currency": None, "observedAt": NOW}
    ready = client_status(Seen(1), model(), [accepted(), resolved()], ("ml", "gw"), True, GOOD, NOW, usage)
    assert ready["gateway"] == "ml/gw" and ready["usage"] == usage
    assert "usage" not in client_status(Seen(1), model(), [], ("ml", "gw"), True, GOOD, NOW)


@pytest.mark.parametrize(
    ("spec", "text"),
    [({}, "*"), ({"models": ["chat", "embed-*"]}, "chat,embed-*"), ({"models": ["b", "a", "b"]}, "b,a")],
)
def test_models_text(spec: dict[str, Any], text: str) -> None:
    assert models_text(model(**spec)) == text
    assert models_text(None) is None


# ---------------------------------------------------------------------------- usage

T0 = 1_777_888_800.0  # a whole day, so a whole minute
MINUTE_DOC = {"requests": 3, "promptTokens": 100, "completionTokens": 40, "cost": "0.0125"}


def pod(
    minute_start: float, cost: Any = "0.0125", currency: str | None = "USD", **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "client": "default/a",
        "minute": {"start": minute_start, **MINUTE_DOC, "cost": cost},
        "day": {"start": "2026-05-04T00:00:00Z", **MINUTE_DOC, "cost": cost},
        **extra,
    }
    if currency is not None:
        item["currency"] = currency
    return {"clients": [item]}


def test_usage_is_parsed() -> None:
    usage = usage_from_json(pod(T0, cost=0.5))["default/a"]
    assert usage.minute == Window(T0, 3, 100, 40, Decimal("0.5"))
    assert usage.day is not None and usage.day.start == 1_777_852_800.0
    assert usage.currency == "USD"
    assert usage_from_json({"clients": []}) == {}


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"clients": {}},
        {"clients": [{"minute": None}]},
        pod(T0, cost="cheap"),
        pod(T0, cost=-1),
        pod(T0, cost=True),
        {"clients": [{"client": "default/a", "minute": {"start": "yesterday"}}]},
        {"clients": [{"client": "default/a", "minute": {"requests": 1}}]},
        {"clients": [{"client": "default/a", "minute": {"start": T0, "requests": -1}}]},
        {"clients": [{"client": "default/a", "minute": {"start": T0, "promptTokens": 1.5}}]},
    ],
)
def test_malformed_usage_is_refused(doc: Any) -> None:
    with pytest.raises(ValueError):
        usage_from_json(doc)


def summed(*docs: dict[str, Any], now: float = T0 + 30) -> ClientUsage:
    return sum_usage([usage_from_json(d) for d in docs], now)["default/a"]


def test_pods_in_the_same_window_are_added() -> None:
    total = summed(pod(T0), pod(T0, cost=0.0075))
    assert total.minute == Window(T0, 6, 200, 80, Decimal("0.0200"))
    assert total.day is not None and total.day.requests == 6
    assert usage_document(total, NOW)["minute"]["cost"] == "0.02"


def test_only_the_newest_current_window_counts() -> None:
    rolled_over = summed(pod(T0), pod(T0 + 60), now=T0 + 61)
    assert rolled_over.minute is not None and (rolled_over.minute.start, rolled_over.minute.requests) == (
        T0 + 60,
        3,
    )
    over = summed(pod(T0), now=T0 + 300)  # an idle client: no minute, its day goes on
    assert over.minute is None and over.day is not None
    ahead = summed(pod(T0 + 60), now=T0 + 58)  # a pod's clock a little ahead still counts
    assert ahead.minute is not None


def test_mixed_currencies_have_no_cost() -> None:
    mixed = summed(pod(T0), pod(T0, currency="EUR"))
    assert mixed.currency is None and mixed.minute is not None and mixed.minute.cost is None
    assert mixed.minute.requests == 6
    assert usage_document(mixed, NOW)["minute"]["cost"] is None
    assert summed(pod(T0), pod(T0, currency=None)).currency == "USD"


@pytest.mark.parametrize(
    ("cost", "text"),
    [
        ("0", "0"),
        ("0.0200", "0.02"),
        ("4.5168", "4.5168"),
        ("10", "10"),
        ("1E+2", "100"),
        ("0.000001", "0.000001"),
    ],
)
def test_costs_are_plain_decimals(cost: str, text: str) -> None:
    assert format_cost(Decimal(cost)) == text


def test_unchanged_numbers_keep_the_previous_document() -> None:
    before = usage_document(summed(pod(T0)), "2026-05-04T10:00:31Z")
    again = usage_document(summed(pod(T0)), "2026-05-04T10:01:01Z")
    assert settle_usage(before, again) == before
    changed = usage_document(summed(pod(T0), pod(T0)), "2026-05-04T10:01:01Z")
    assert settle_usage(before, changed) == changed
    assert settle_usage(None, again) == again
    # As the API server holds it after a merge patch: None-valued fields absent.
    stored = {k: v for k, v in usage_document(ClientUsage(), NOW).items() if v is not None}
    assert settle_usage(stored, usage_document(ClientUsage(), "later")) == stored
