"""AttemptWatchdog: never early, an idle clock that restarts with activity and pauses for slow
clients, no timer left behind, and an outside cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest
from routeway_proxy.timeouts import AttemptTimeout, AttemptWatchdog


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
        watchdog.start_body(0.4)
        started = loop.time()
        for _ in range(12):  # touched every 0.05 s (8x inside the bound) for longer than it
            await asyncio.sleep(0.05)
            watchdog.touch()
        assert loop.time() - started > 0.4  # still alive: touched in time
        stalled = loop.time()
        await asyncio.sleep(5)
    assert caught.value.kind == "idle"
    assert loop.time() - stalled >= 0.4


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


async def test_finished_attempts_leave_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    watchdogs = [AttemptWatchdog(30.0, None, loop) for _ in range(50)]
    for watchdog in watchdogs:
        watchdog.__enter__()
    handles = [watchdog._handle for watchdog in watchdogs]
    for watchdog in watchdogs:
        watchdog.__exit__(None, None, None)
    assert all(handle is not None and handle.cancelled() for handle in handles)
    assert all(watchdog._handle is None for watchdog in watchdogs)


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    loop = asyncio.get_running_loop()

    async def attempt() -> None:
        with AttemptWatchdog(10.0, None, loop):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
