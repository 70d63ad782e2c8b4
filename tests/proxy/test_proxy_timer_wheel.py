"""AttemptWatchdog on the shared TimerWheel: never early, late by at most a tick, nothing left
behind, and an outside cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest
from routeway.proxy.timeouts import GRANULARITY, AttemptTimeout, AttemptWatchdog, wheel_for


async def test_first_byte_timeout_fires_and_never_early() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AttemptTimeout) as caught, AttemptWatchdog(0.05, None, loop):
        await asyncio.sleep(5)
    assert caught.value.kind == "first-byte"
    assert loop.time() - started >= 0.05


async def test_idle_bound_restarts_with_each_touch_then_cuts_a_stall() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(AttemptTimeout) as caught, AttemptWatchdog(0.05, None, loop) as watchdog:
        watchdog.start_body(0.08)
        started = loop.time()
        for _ in range(6):  # 0.24 s of activity, three times the idle bound
            await asyncio.sleep(0.04)
            watchdog.touch()
        assert loop.time() - started > 0.08  # still alive: touched in time
        stalled = loop.time()
        await asyncio.sleep(5)
    assert caught.value.kind == "idle"
    assert loop.time() - stalled >= 0.08


async def test_paused_clock_does_not_count_a_slow_client_as_a_stall() -> None:
    loop = asyncio.get_running_loop()
    with AttemptWatchdog(0.05, None, loop) as watchdog:
        watchdog.start_body(0.05)
        watchdog.pause()
        await asyncio.sleep(0.2)  # four idle bounds while writing to the client
        watchdog.touch()


async def test_hard_deadline_is_reported_as_total() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(AttemptTimeout) as caught, AttemptWatchdog(10.0, loop.time() + 0.05, loop) as watchdog:
        watchdog.start_body(10.0)
        for _ in range(500):  # touched all along: only the deadline can end it
            await asyncio.sleep(0.01)
            watchdog.touch()
    assert caught.value.kind == "total"


async def test_finished_attempts_leave_nothing_pending_and_share_ticks() -> None:
    loop = asyncio.get_running_loop()
    wheel = wheel_for(loop)
    watchdogs = [AttemptWatchdog(30.0, None, loop) for _ in range(200)]
    for watchdog in watchdogs:
        watchdog.__enter__()
    assert wheel.pending() >= 200
    # 200 checks due within a few microseconds of each other fall into one or two ticks
    assert len({watchdog._tick for watchdog in watchdogs}) <= 2
    for watchdog in watchdogs:
        watchdog.__exit__(None, None, None)
    assert wheel.pending() == 0


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    loop = asyncio.get_running_loop()

    async def attempt() -> None:
        with AttemptWatchdog(10.0, None, loop):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(GRANULARITY)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wheel_for(loop).pending() == 0


async def test_each_loop_has_its_own_wheel() -> None:
    loop = asyncio.get_running_loop()
    other = asyncio.new_event_loop()
    try:
        assert wheel_for(other) is not wheel_for(loop)
        assert wheel_for(loop) is wheel_for(loop)
    finally:
        other.close()
