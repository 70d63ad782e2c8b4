"""The hang check of a worker group: which silences kill a worker (`is_stuck`, pure), and the
worker's promise while it applies a config (`RelayedSource(on_busy=...)`, real pipe)."""

from __future__ import annotations

import asyncio
import multiprocessing

from routeway_proxy.relay import RelayedSource
from routeway_proxy.supervisor import APPLY_ALLOWANCE, STARTUP_GRACE, is_stuck

from routeway.configupdate import ConfigRejected, encode_update

T = 30.0  # --worker-timeout


def test_a_listening_worker_is_stuck_only_after_the_timeout() -> None:
    assert not is_stuck(now=130.0, last_beat=100.0, resumed_at=0.0, listening=True, timeout=T)
    assert is_stuck(now=130.5, last_beat=100.0, resumed_at=0.0, listening=True, timeout=T)


def test_zero_disables_the_check() -> None:
    assert not is_stuck(now=1e9, last_beat=0.0, resumed_at=0.0, listening=True, timeout=0.0)


def test_a_starting_worker_gets_the_startup_grace() -> None:
    late = 100.0 + STARTUP_GRACE
    assert not is_stuck(now=late - 1, last_beat=100.0, resumed_at=0.0, listening=False, timeout=T)
    assert is_stuck(now=late + 1, last_beat=100.0, resumed_at=0.0, listening=False, timeout=T)
    # a timeout longer than the grace still applies in full
    assert not is_stuck(
        now=late + 1, last_beat=100.0, resumed_at=0.0, listening=False, timeout=2 * STARTUP_GRACE
    )


def test_silence_counts_from_the_supervisors_own_resume() -> None:
    """The whole group was paused for 5 minutes: nobody beat, nobody was stuck."""
    assert not is_stuck(now=400.0, last_beat=100.0, resumed_at=399.8, listening=True, timeout=T)
    assert is_stuck(now=430.0, last_beat=100.0, resumed_at=399.8, listening=True, timeout=T)


def test_a_promise_in_the_future_covers_a_long_apply() -> None:
    promise = 100.0 + APPLY_ALLOWANCE
    assert not is_stuck(now=promise - 1, last_beat=promise, resumed_at=0.0, listening=True, timeout=T)
    assert is_stuck(now=promise + T + 1, last_beat=promise, resumed_at=0.0, listening=True, timeout=T)


async def test_the_worker_is_busy_exactly_while_it_loads_and_applies_an_update() -> None:
    receiving, sending = multiprocessing.Pipe(duplex=False)
    calls: list[bool] = []
    source = RelayedSource(receiving, on_busy=calls.append)
    updates = source.watch()
    try:
        for n in range(2):
            sending.send_bytes(encode_update(ConfigRejected(f"source-{n}", ("bad",))))
            update = await asyncio.wait_for(anext(updates), timeout=10)
            assert isinstance(update, ConfigRejected) and update.source == f"source-{n}"
            # busy before the update was handed over; not yet done: the consumer applies it now
            assert calls == [True, False] * n + [True]
        sending.send_bytes(encode_update(ConfigRejected("source-2", ("bad",))))
        await asyncio.wait_for(anext(updates), timeout=10)
        assert calls == [True, False, True, False, True]  # asking for the next one ended it
    finally:
        await updates.aclose()
        sending.close()
        receiving.close()
