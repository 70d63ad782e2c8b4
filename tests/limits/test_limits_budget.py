"""The limit algorithm (`limits/budget.py`), pure, on a fake clock.

Matrix: reserve until full → reject with the failing limit and retry-after; continuous refill
(per-minute buckets); settle refunds unused tokens and charges extra (debt); refunds stop at
a full budget; several limits all-or-nothing (a failing one reserves nothing in the others);
the longest wait is reported; a request larger than a limit is `too_large`; tokensPerDay as a
UTC calendar day (reset at midnight, not 24 h after); a clock stepping back refills nothing.
"""

from __future__ import annotations

import pytest
from limits_helpers import DAY, NOON
from routeway_proxy.limits.budget import (
    FRESH,
    Demand,
    LimitKind,
    State,
    decide,
    settle_state,
    used_at,
)

RPM = LimitKind.REQUESTS_PER_MINUTE
TPM = LimitKind.TOKENS_PER_MINUTE
TPD = LimitKind.TOKENS_PER_DAY


class Book:
    """States by (key, kind), the way every store keeps them."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, LimitKind], State] = {}

    def reserve(self, now: float, *demands: Demand):  # type: ignore[no-untyped-def]
        states = [self.states.get((d.key, d.kind), FRESH) for d in demands]
        decision, new = decide(demands, states, now)
        for d, s in zip(demands, new, strict=True):
            self.states[d.key, d.kind] = s
        return decision

    def settle(
        self,
        now: float,
        key: str,
        kind: LimitKind,
        limit: int,
        delta: float,
        reserved_at: float | None = None,
    ) -> None:
        state = self.states.get((key, kind), FRESH)
        at = now if reserved_at is None else reserved_at
        self.states[key, kind] = settle_state(kind, limit, state, delta, now, at)

    def used(self, now: float, key: str, kind: LimitKind, limit: int) -> float:
        return used_at(kind, limit, self.states.get((key, kind), FRESH), now)


def test_reserve_until_full_then_reject_with_retry_after() -> None:
    book = Book()
    tpm = Demand("client:a", TPM, 5000, 1000)
    decisions = [book.reserve(NOON, tpm) for _ in range(6)]
    assert [d.admitted for d in decisions] == [True] * 5 + [False]
    assert [d.budgets[0].remaining for d in decisions[:5]] == [4000, 3000, 2000, 1000, 0]
    rejected = decisions[5]
    assert rejected.failed == tpm
    assert not rejected.too_large
    # 1000 tokens refill at 5000/60 per second: 12 s
    assert rejected.retry_after == pytest.approx(12.0)
    assert rejected.budgets[0].reset == pytest.approx(60.0)  # the whole bucket: 5000 at 5000/min


def test_refill_is_continuous() -> None:
    book = Book()
    rpm = Demand("client:a", RPM, 60, 1)
    for _ in range(60):
        assert book.reserve(NOON, rpm).admitted
    assert not book.reserve(NOON, rpm).admitted
    assert not book.reserve(NOON + 0.99, rpm).admitted
    assert book.reserve(NOON + 1.0, rpm).admitted  # one request per second comes back
    assert not book.reserve(NOON + 1.0, rpm).admitted
    decision = book.reserve(NOON + 30.0, Demand("client:a", RPM, 60, 29))
    assert decision.admitted and decision.budgets[0].remaining == 0


def test_settle_refunds_unused_and_charges_extra() -> None:
    book = Book()
    tpm = Demand("client:a", TPM, 5000, 1000)
    book.reserve(NOON, tpm)
    book.settle(NOON, "client:a", TPM, 5000, 300 - 1000)  # used 300 of 1000 reserved
    assert book.used(NOON, "client:a", TPM, 5000) == pytest.approx(300)
    book.reserve(NOON, tpm)
    book.settle(NOON, "client:a", TPM, 5000, 6000 - 1000)  # used 6000: the estimate was low
    assert book.used(NOON, "client:a", TPM, 5000) == pytest.approx(6300)
    decision = book.reserve(NOON, Demand("client:a", TPM, 5000, 1))
    assert not decision.admitted and decision.budgets[0].remaining == 0
    assert decision.retry_after == pytest.approx((6301 - 5000) * 60 / 5000)


def test_refund_never_overfills_the_bucket() -> None:
    book = Book()
    book.reserve(NOON, Demand("client:a", TPM, 6000, 6000))
    # 60 s later the bucket has refilled; the reservation comes back as unused
    book.settle(NOON + 60, "client:a", TPM, 6000, -6000)
    assert book.used(NOON + 60, "client:a", TPM, 6000) == 0
    assert book.reserve(NOON + 60, Demand("client:a", TPM, 6000, 6000)).admitted
    assert not book.reserve(NOON + 60, Demand("client:a", TPM, 6000, 1)).admitted


def test_several_limits_are_all_or_nothing() -> None:
    book = Book()
    client = Demand("client:a", TPM, 10000, 3000)
    route = Demand("route:r", TPM, 5000, 3000)
    assert book.reserve(NOON, client, route).admitted
    decision = book.reserve(NOON, client, route)
    assert not decision.admitted and decision.failed == route
    # the client's budget took nothing from the refused request
    assert book.used(NOON, "client:a", TPM, 10000) == pytest.approx(3000)
    assert [b.remaining for b in decision.budgets] == [7000, 2000]


def test_rejection_reports_the_longest_wait() -> None:
    book = Book()
    book.reserve(NOON, Demand("client:a", RPM, 60, 60), Demand("client:a", TPM, 600, 600))
    decision = book.reserve(NOON, Demand("client:a", RPM, 60, 1), Demand("client:a", TPM, 600, 300))
    assert decision.failed is not None and decision.failed.kind is TPM
    assert decision.retry_after == pytest.approx(30.0)  # the RPM would fit after 1 s


def test_larger_than_the_limit_is_too_large() -> None:
    book = Book()
    decision = book.reserve(NOON, Demand("client:a", TPM, 5000, 5001))
    assert not decision.admitted and decision.too_large
    assert book.used(NOON, "client:a", TPM, 5000) == 0
    assert book.reserve(NOON, Demand("client:a", TPM, 5000, 5000)).admitted


def test_day_is_a_utc_calendar_day() -> None:
    book = Book()
    late = 20000 * DAY + DAY - 3600.0  # 23:00 UTC
    tpd = Demand("client:a", TPD, 1000, 1000)
    assert book.reserve(late, tpd).admitted
    decision = book.reserve(late + 1800, tpd)
    assert not decision.admitted
    assert decision.retry_after == pytest.approx(1800.0)  # to midnight, not 24 h after the use
    assert decision.budgets[0].reset == pytest.approx(1800.0)
    assert book.reserve(late + 3600, tpd).admitted  # 00:00 UTC: a new day, a full budget
    # a day budget does not refill within the day
    assert not book.reserve(late + 3600 + DAY - 1, tpd).admitted


def test_settling_yesterdays_reservation_refunds_nothing_today() -> None:
    book = Book()
    late = 20000 * DAY + DAY - 10.0
    book.reserve(late, Demand("client:a", TPD, 1000, 800))
    book.reserve(late + 20, Demand("client:a", TPD, 1000, 500))  # today
    book.settle(late + 30, "client:a", TPD, 1000, 100 - 800, reserved_at=late)  # yesterday's: used 100
    assert book.used(late + 30, "client:a", TPD, 1000) == pytest.approx(500)
    book.settle(late + 40, "client:a", TPD, 1000, 900 - 800, reserved_at=late)  # its extra counts today
    assert book.used(late + 40, "client:a", TPD, 1000) == pytest.approx(600)


def test_clock_stepping_back_refills_nothing() -> None:
    book = Book()
    rpm = Demand("client:a", RPM, 60, 60)
    book.reserve(NOON, rpm)
    assert not book.reserve(NOON - 30, Demand("client:a", RPM, 60, 1)).admitted
    assert not book.reserve(NOON + 0.5, Demand("client:a", RPM, 60, 1)).admitted
    assert book.reserve(NOON + 1.0, Demand("client:a", RPM, 60, 1)).admitted
