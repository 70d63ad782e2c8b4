"""Effective weights during a rollout and the consistent arm of a sticky key.

Matrix: 2 and 3 backends per arm blend linearly (the same backend name listed once per arm),
the shares always sum to 100; no canary, a canary without a ready target or without weight gets
nothing and its targets are listed at 0; 0% and 100%; sticky keys: growing the percent never
moves a key from the canary back to stable (property), the canary's share of many keys follows
the percent, and the salt draws another cohort.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeway.proxyconfig import Target
from routeway.rollout import WeightShare, arm_for_key, canary_share, effective_weights
from routeway.rollout.weights import key_bucket


def targets(*pairs: tuple[str, int]) -> tuple[Target, ...]:
    return tuple(Target(backend=f"default/{b}", model="m", weight=w) for b, w in pairs)


def table(shares: tuple[WeightShare, ...]) -> list[tuple[str, str, float]]:
    return [(s.backend.removeprefix("default/"), s.arm, s.weight) for s in shares]


@pytest.mark.parametrize(
    ("stable", "canary", "percent", "expected"),
    [
        (
            targets(("a", 80), ("b", 20)),
            targets(("a", 50), ("c", 50)),
            10,
            [("a", "stable", 72.0), ("b", "stable", 18.0), ("a", "canary", 5.0), ("c", "canary", 5.0)],
        ),
        (
            targets(("a", 1), ("b", 1)),
            targets(("a", 3), ("b", 1)),
            50,
            [("a", "stable", 25.0), ("b", "stable", 25.0), ("a", "canary", 37.5), ("b", "canary", 12.5)],
        ),
        (
            targets(("a", 50), ("b", 30), ("c", 20)),
            targets(("a", 20), ("b", 30), ("d", 50)),
            40,
            [
                ("a", "stable", 30.0),
                ("b", "stable", 18.0),
                ("c", "stable", 12.0),
                ("a", "canary", 8.0),
                ("b", "canary", 12.0),
                ("d", "canary", 20.0),
            ],
        ),
        (
            targets(("a", 1), ("b", 1), ("c", 1)),
            targets(("a", 1), ("b", 1), ("c", 0)),
            10,
            [
                ("a", "stable", 30.0),
                ("b", "stable", 30.0),
                ("c", "stable", 30.0),
                ("a", "canary", 5.0),
                ("b", "canary", 5.0),
                ("c", "canary", 0.0),
            ],
        ),
        (targets(("a", 1)), targets(("b", 1)), 100, [("a", "stable", 0.0), ("b", "canary", 100.0)]),
        (targets(("a", 1), ("b", 3)), None, 50, [("a", "stable", 25.0), ("b", "stable", 75.0)]),
    ],
    ids=["2+2 at 10%", "same names at 50%", "3+3 at 40%", "3+3 with a zero weight", "100%", "no canary"],
)
def test_the_blend_of_two_arms(
    stable: tuple[Target, ...], canary: tuple[Target, ...] | None, percent: int, expected: list[object]
) -> None:
    shares = effective_weights(stable, canary, percent)
    assert table(shares) == expected
    assert sum(s.weight for s in shares) == pytest.approx(100.0)


def test_thirds_are_rounded_and_still_sum_to_100() -> None:
    shares = effective_weights(targets(("a", 1), ("b", 1), ("c", 1)), targets(("d", 1)), 10)
    assert [s.weight for s in shares] == [30.0, 30.0, 30.0, 10.0]
    shares = effective_weights(targets(("a", 1), ("b", 1), ("c", 1)), targets(("d", 1)), 1)
    assert [s.weight for s in shares] == [33.0, 33.0, 33.0, 1.0]
    shares = effective_weights(targets(("a", 1), ("b", 1), ("c", 1)), targets(("d", 1)), 0)
    assert shares[0].weight == 33.3333 and shares[0].to_json() == {
        "backend": "default/a",
        "arm": "stable",
        "weight": 33.3333,
    }


def test_a_canary_without_a_ready_target_or_weight_gets_nothing() -> None:
    stable, canary = targets(("a", 1)), targets(("b", 1))
    assert table(effective_weights(stable, canary, 50, canary_ready=False)) == [
        ("a", "stable", 100.0),
        ("b", "canary", 0.0),
    ]
    assert canary_share(50, canary, canary_ready=False) == 0.0
    assert canary_share(50, targets(("b", 0))) == 0.0
    assert canary_share(50, None) == 0.0
    assert canary_share(50, canary) == 50.0


def test_sticky_arms_at_the_edges() -> None:
    assert arm_for_key("anyone", 0) == "stable"
    assert arm_for_key("anyone", 100) == "canary"
    assert key_bucket("k") == key_bucket("k") and 0 <= key_bucket("k") < 10_000


@given(st.text(max_size=40), st.floats(0, 100), st.floats(0, 100), st.text(max_size=16))
def test_growing_the_percent_never_moves_a_key_off_the_canary(
    key: str, p: float, q: float, salt: str
) -> None:
    low, high = sorted((p, q))
    if arm_for_key(key, low, salt) == "canary":
        assert arm_for_key(key, high, salt) == "canary"
    if arm_for_key(key, high, salt) == "stable":
        assert arm_for_key(key, low, salt) == "stable"


def test_the_canary_share_of_keys_follows_the_percent() -> None:
    keys = [f"session-{i}" for i in range(20_000)]
    for percent in (10, 50):
        share = sum(arm_for_key(k, percent, "rev-1") == "canary" for k in keys) / len(keys)
        assert abs(share - percent / 100) < 0.015
    # another rollout (salt) draws another cohort: about 10% of the first 10% again
    first = {k for k in keys if arm_for_key(k, 10, "rev-1") == "canary"}
    second = {k for k in keys if arm_for_key(k, 10, "rev-2") == "canary"}
    assert len(first & second) / len(first) < 0.2
