"""Helpers of the limits tests."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0
NOON = 20000 * DAY + 12 * 3600.0  # a UTC noon, far from the day's edges


@dataclass
class FakeClock:
    """Unix time that moves only when told."""

    now: float = NOON

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
