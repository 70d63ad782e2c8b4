"""A backend's Retry-After hold in its health (`OutlierDetector.hold`), on a clock moved by hand.

Matrix: a hold takes the backend out of rotation and marks it never to be called until it
ends, then both end together; a shorter hold while a longer one runs changes nothing, a
longer one extends it and takes its status; a hold is no ejection (no count, no doubling of
the next ejection, no delay in forgetting the doubling) and does not shorten a running
ejection; failures while held count towards an ejection; zero or negative seconds hold nothing; `/routes`' description shows it.
"""

from __future__ import annotations

from proxy_helpers import FakeClock
from routeway_proxy.health import OutlierDetector

from routeway.proxyconfig import OutlierDetection


def detector(clock: FakeClock, failures: int = 2) -> OutlierDetector:
    return OutlierDetector(
        OutlierDetection(consecutiveFailures=failures, baseEjection=10, maxEjection=100), clock
    )


def test_a_hold_is_out_of_rotation_and_never_called_until_it_ends() -> None:
    clock = FakeClock()
    health = detector(clock)
    assert health.hold(7.0, 429) is True
    assert (health.is_ejected(), health.is_held(), health.held_status) == (True, True, 429)
    assert health.held_remaining() == 7.0 and health.ejection_remaining() == 7.0
    assert health.describe()["heldForSeconds"] == 7.0
    clock.advance(6.9)
    assert health.is_held() and health.is_ejected()
    clock.advance(0.2)
    assert (health.is_held(), health.is_ejected(), health.held_remaining()) == (False, False, 0.0)
    assert health.describe()["heldForSeconds"] == 0.0


def test_only_a_longer_hold_changes_it() -> None:
    clock = FakeClock()
    health = detector(clock)
    health.hold(30.0, 429)
    assert health.hold(5.0, 503) is False
    assert (health.held_remaining(), health.held_status) == (30.0, 429)
    assert health.hold(40.0, 503) is True
    assert (health.held_remaining(), health.held_status, health.ejection_remaining()) == (40.0, 503, 40.0)


def test_a_hold_is_no_ejection() -> None:
    clock = FakeClock()
    health = detector(clock)
    health.hold(5.0, 429)
    assert (health.ejections, health.level, health.ejected_until) == (0, 0, None)
    clock.advance(6.0)
    assert health.record_failure() is False
    assert health.record_failure() is True  # the first ejection: the base time, not doubled
    assert health.ejection_remaining() == 10.0
    health.hold(3.0, 503)  # a shorter hold does not shorten the ejection
    assert health.ejection_remaining() == 10.0 and health.held_remaining() == 3.0


def test_failures_while_held_count_towards_an_ejection() -> None:
    """Requests already in flight when the hold began still fail for real; the ejection they
    cause runs from its own start, not from the hold's end."""
    clock = FakeClock()
    health = detector(clock)
    health.hold(50.0, 503)
    assert health.record_failure() is False
    assert health.record_failure() is True
    assert (health.ejections, health.level) == (1, 1)
    assert health.ejected_until == clock() + 10.0 and health.ejection_remaining() == 50.0  # still held


def test_a_hold_does_not_delay_forgetting_the_doubling() -> None:
    """The doubling is forgotten `max_ejection` after the last ejection ended, however long a
    hold given since runs."""
    clock = FakeClock()
    health = detector(clock)
    health.record_failure()
    assert health.record_failure() is True  # ejected 10 s, level 1
    clock.advance(20.0)
    health.hold(300.0, 503)  # far past when the doubling is due to be forgotten
    clock.advance(95.0)  # 105 s after the ejection ended (max_ejection is 100)
    health.record_success()
    assert health.level == 0
    clock.advance(300.0)
    health.record_failure()
    assert health.record_failure() is True
    assert health.ejection_remaining() == 10.0  # the base time again, not doubled


def test_no_hold_for_nothing() -> None:
    health = detector(FakeClock())
    assert health.hold(0.0, 429) is False and health.hold(-3.0, 429) is False
    assert (health.is_held(), health.ejected_until) == (False, None)
