"""Effective weights during a rollout, and the consistent arm of a sticky request.

A request is assigned to an arm first — the canary with the rollout's percent, the stable arm
with the rest — and then to a backend by that arm's own weights. So each backend's share of the
route's traffic is its arm's share times its weight within the arm: the linear blend of the
two revisions, listed per (backend, arm) because the same backend name may appear in both
arms with different specs.

Why the arm split is a hash threshold for sticky keys: `bucket(key) < percent * 100` with a
bucket in [0, 10000) puts every key that was on the canary at 10% still on it at 50% (the set
of canary keys only grows with the percent), so a session never bounces between revisions as
the weight rises. The bucket is blake2b, not Python's `hash`, so every worker and every pod
agrees; a salt (the canary revision) draws a fresh cohort for each rollout instead of making
the same clients everyone's guinea pigs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from routeway.proxyconfig import Target

Arm = Literal["stable", "canary"]
BUCKETS = 10_000  # a percent in hundredths


@dataclass(frozen=True, slots=True)
class WeightShare:
    backend: str  # BackendConfig.id
    arm: Arm
    weight: float  # percent of the route's traffic

    def to_json(self) -> dict[str, object]:
        return {"backend": self.backend, "arm": self.arm, "weight": self.weight}


def canary_share(percent: float, canary_targets: Sequence[Target] | None, canary_ready: bool = True) -> float:
    """The canary arm's percent of the traffic: 0 without a canary, a ready target or any weight."""
    if not canary_targets or not canary_ready or sum(t.weight for t in canary_targets) <= 0:
        return 0.0
    return float(min(max(percent, 0.0), 100.0))


def effective_weights(
    stable_targets: Sequence[Target],
    canary_targets: Sequence[Target] | None,
    canary_percent: float,
    canary_ready: bool = True,
) -> tuple[WeightShare, ...]:
    """Every weighted target of both arms with its percent of the route's traffic (stable arm
    first, each arm in its targets' order; rounded to 4 decimals). Without a canary arm, or
    while it has no ready target, the stable arm carries everything and the canary's targets
    are listed at 0."""
    canary = canary_share(canary_percent, canary_targets, canary_ready)
    shares = list(_spread(stable_targets, "stable", 100.0 - canary))
    if canary_targets:
        shares.extend(_spread(canary_targets, "canary", canary))
    return tuple(shares)


def _spread(targets: Sequence[Target], arm: Arm, percent: float) -> list[WeightShare]:
    total = sum(t.weight for t in targets)
    return [
        WeightShare(t.backend, arm, round(percent * t.weight / total, 4) if total > 0 else 0.0)
        for t in targets
    ]


def key_bucket(key: str, salt: str = "") -> int:
    """A stable bucket in [0, 10000) for a stickiness key."""
    # the key is a sticky header's value, which the proxy's HTTP server decodes with
    # surrogateescape: a byte that was not UTF-8 is hashed as sent, never an encoding error
    digest = hashlib.blake2b(
        salt.encode() + b"\x00" + key.encode("utf-8", "surrogateescape"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def arm_for_key(key: str, canary_percent: float, salt: str = "") -> Arm:
    """The arm of a sticky request: monotone in `canary_percent` (see the module docstring).
    Pass the percent `canary_share` gives, so a canary without ready targets gets no one."""
    return "canary" if key_bucket(key, salt) < round(canary_percent * BUCKETS / 100) else "stable"
