"""Choose arm and backend: which target of a route the next attempt goes to.

Arms: a route in a rollout serves two revisions at once (stable and canary), and a request
is assigned to an arm before a backend is chosen by that arm's weights (`choose_arm`). A
request with a stickiness key (the stable arm's sticky header, else the canary's) goes where
`routeway.rollout.weights.arm_for_key` puts it — the same arm in every worker and pod, and a
key on the canary stays there as the weight grows; one without goes by the route's smooth
counter (`ArmSplit`), an exact split. Everything after (targets, fallbacks, retries, the
route timeout) is the chosen arm's own.

Candidate order (`CandidatePlan`): up to `1 + retries.attempts` weighted picks (sticky or
smooth round-robin, skipping ejected backends and, when possible, ones that already failed for
this request), then the fallbacks in order, healthy ones first. The common case — no
stickiness, no backend of the route ever ejected — is one balancer pick (none at all for a
route with a single weighted target), so a plan costs little more than the pick it makes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from routeway.rollout.weights import arm_for_key
from routeway_proxy.balancer import pick_sticky

if TYPE_CHECKING:
    from routeway_proxy.table import RouteEntry, TargetEntry


class ArmSplit:
    """How a route in a rollout divides its requests between its arms (see `choose_arm`).

    Without a stickiness key the split is a smooth counter in hundredths of a percent: every
    request adds `step`, and each time the credit reaches 100% one request goes to the canary
    — so a weight of 10 sends exactly 10 of every 100 requests there, not 10 on average.

    The credit starts at a random point, not at zero: every config change builds a new split
    (any route's step, any backend edit), and a counter that started at zero each time would
    put the canary last in every cycle — reloaded more often than every 100/percent requests,
    it would never get one. From a random point each table's share is the percent on average
    and still exact over every 100 consecutive requests."""

    __slots__ = ("_credit", "_step", "percent", "salt", "sticky_header")

    def __init__(self, percent: float, salt: str, sticky_header: str | None) -> None:
        self.percent = percent  # the canary's effective share (`canary_share`)
        self.salt = salt  # the canary revision: a fresh sticky cohort per rollout
        self.sticky_header = sticky_header  # the stable arm's, else the canary's
        self._step = round(percent * 100)
        self._credit = random.randrange(10_000)

    def next_is_canary(self) -> bool:
        credit = self._credit + self._step
        if credit >= 10_000:
            self._credit = credit - 10_000
            return True
        self._credit = credit
        return False


def choose_arm(route: RouteEntry, headers: Mapping[str, str]) -> tuple[RouteEntry, str | None]:
    """The arm of `route` this request is served by, and its stickiness key within that arm
    (the arm's own sticky header). A route without a canary is its own only arm."""
    split = route.split
    canary = route.canary
    if split is not None and canary is not None:
        name = split.sticky_header
        key = headers.get(name) if name else None
        if key is not None:
            on_canary = arm_for_key(key, split.percent, split.salt) == "canary"
        else:
            on_canary = split.next_is_canary()
        if on_canary:
            route = canary
    name = route.sticky_header
    return route, (headers.get(name) if name else None)


class CandidatePlan:
    """The targets of one request, in the order they are tried."""

    __slots__ = ("_failed", "_fallback_order", "_route", "_sticky_key", "_weighted_left")

    def __init__(self, route: RouteEntry, sticky_key: str | None) -> None:
        self._route = route
        self._sticky_key = sticky_key
        self._weighted_left = 1 + max(route.config.retries.attempts, 0) if route.has_weighted_targets else 0
        self._failed: set[int] | None = None  # indexes of targets that failed for this request
        self._fallback_order: list[TargetEntry] | None = None

    def next(self) -> TargetEntry | None:
        route = self._route
        if self._weighted_left > 0:
            self._weighted_left -= 1
            if self._failed is None and self._sticky_key is None and none_ever_ejected(route.targets):
                # the common case: no failure yet, no stickiness, every backend healthy
                only = route.only_target
                if only is not None:  # one weighted target: the balancer would pick it, unchanged
                    return only
                index = route.balancer.pick(())
            else:
                index = self._pick_weighted()
            if index is not None:
                return route.targets[index]
            self._weighted_left = 0
        if self._fallback_order is None:
            healthy = [t for t in route.fallbacks if not t.backend.health.is_ejected()]
            ejected = [t for t in route.fallbacks if t.backend.health.is_ejected()]
            self._fallback_order = healthy + ejected
        if self._fallback_order:
            return self._fallback_order.pop(0)
        return None

    def mark_failed(self, target: TargetEntry) -> None:
        failed = self._failed
        if failed is None:
            failed = self._failed = set()
        for i, candidate in enumerate(self._route.targets):
            if candidate is target:
                failed.add(i)

    def _pick_weighted(self) -> int | None:
        route = self._route
        targets = route.targets
        failed = self._failed or set()
        ejected = {i for i, t in enumerate(targets) if t.target.weight > 0 and t.backend.health.is_ejected()}
        if not ejected and not failed:
            return self._pick(())
        live = [i for i, t in enumerate(targets) if t.target.weight > 0 and i not in ejected]
        if live:
            if any(i not in failed for i in live):
                return self._pick(ejected | failed)
            return self._pick(ejected)  # every live target failed once: try one of them again
        # every weighted target is ejected: a healthy fallback goes first
        if any(not t.backend.health.is_ejected() for t in route.fallbacks):
            return None
        if any(i not in failed for i, t in enumerate(targets) if t.target.weight > 0):
            return self._pick(failed)
        return self._pick(())

    def _pick(self, excluded: set[int] | tuple[()]) -> int | None:
        route = self._route
        if self._sticky_key is not None:
            return pick_sticky(self._sticky_key, route.target_keys, route.balancer.weights, excluded)
        return route.balancer.pick(excluded)


def none_ever_ejected(targets: tuple[TargetEntry, ...]) -> bool:
    """No backend of `targets` was ever out of rotation (`out_until` stays set once one was): the
    common case, where their health needs no closer look. (A loop, not `all()` over a
    generator: this runs on every request, usually over one or two targets.)"""
    for candidate in targets:  # noqa: SIM110  (see the docstring)
        if candidate.backend.health.out_until is not None:
            return False
    return True
