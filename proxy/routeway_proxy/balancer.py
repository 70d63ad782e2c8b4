"""Choosing a target among a route's weighted targets: pure, no I/O, no clock.

Why smooth weighted round-robin (nginx's algorithm): it is exact — over any window of
`sum(weights)` picks each target gets exactly its weight — and interleaves targets instead of
sending runs, so a 10 % canary sees a steady 1-in-10 stream from the first request on. Random
choice would need thousands of requests to be within a percentage point.

Why weighted rendezvous hashing for stickiness: a session key (the route's `stickyHeader`)
maps to the same target as long as that target is eligible, with no shared state between
workers; removing or ejecting one target only moves the sessions that were on it, and the
share of keys each target gets follows its weight. The hash is blake2b, not Python's `hash`,
so every worker process agrees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence

from routeway_proxy.headers import header_bytes

_TWO_64 = float(2**64)


class WeightedRoundRobin:
    """nginx's smooth weighted round-robin over fixed weights; state is the running scores.

    Not thread-safe; one instance lives in one routing table on one event loop.
    """

    __slots__ = ("_current", "_weights")

    def __init__(self, weights: Sequence[int]) -> None:
        if any(w < 0 for w in weights):
            raise ValueError("weights must not be negative")
        self._weights = tuple(weights)
        self._current = [0] * len(weights)

    @property
    def weights(self) -> tuple[int, ...]:
        return self._weights

    def pick(self, excluded: Collection[int] = ()) -> int | None:
        """Index of the next target, skipping `excluded` and weight-0 targets; None if none left."""
        weights = self._weights
        current = self._current
        total = 0
        best = -1
        best_score = 0
        for i, weight in enumerate(weights):
            if weight <= 0 or (excluded and i in excluded):
                continue
            score = current[i] + weight
            current[i] = score
            total += weight
            if best < 0 or score > best_score:
                best = i
                best_score = score
        if best < 0:
            return None
        current[best] -= total
        return best


def pick_sticky(
    key: str, target_ids: Sequence[str], weights: Sequence[int], excluded: Collection[int] = ()
) -> int | None:
    """Weighted rendezvous hashing: the target with the highest `weight / -ln(u)` wins.

    `u` is a uniform draw in (0, 1) derived from (key, target id) only, so the answer depends
    on nothing but the key and the eligible targets.
    """
    encoded = header_bytes(key)  # a sticky header's value: it may hold bytes that are not UTF-8
    best = -1
    best_score = -1.0
    for i, (target_id, weight) in enumerate(zip(target_ids, weights, strict=True)):
        if weight <= 0 or (excluded and i in excluded):
            continue
        digest = hashlib.blake2b(encoded + b"\x00" + target_id.encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 0.5) / _TWO_64
        score = weight / -math.log(uniform)
        if score > best_score:
            best = i
            best_score = score
    return best if best >= 0 else None
