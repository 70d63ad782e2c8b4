"""The supervisor-to-worker config relay over real pipes: order, replay to late workers, what
the supervisor refused goes out as a rejection, and a dead or stuck worker that does not stop
the others' updates; a message a worker cannot read, or an update JSON cannot carry, becomes a
rejection (the last good config keeps serving). The message format itself:
tests/core/test_core_configupdate.py."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

import pytest
from proxy_helpers import make_backend, make_config, make_route
from routeway_proxy.config_apply import ConfigApplier
from routeway_proxy.relay import Broadcaster, RelayedSource
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.supervisor import judged_by

from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate, encode_update

CONFIG_A = make_config([make_backend("a", "http://127.0.0.1:9/v1")], [make_route("m", [("a", 1)])])
CONFIG_B = make_config([make_backend("b", "http://127.0.0.1:9/v1")], [make_route("m", [("b", 1)])])
LOADED_A = ConfigLoaded(CONFIG_A, {"ns/s/key": "sk-secret"}, "files")
LOADED_B = ConfigLoaded(CONFIG_B, {}, "files", ("a warning",))
REJECTED = ConfigRejected("files", ("bad edit",))


class Static:
    def __init__(self, *updates: ConfigUpdate) -> None:
        self._updates = updates

    def describe(self) -> str:
        return "static"

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        for update in self._updates:
            yield update


def pipe() -> tuple[Connection, Connection]:
    receiving, sending = multiprocessing.get_context("spawn").Pipe(duplex=False)
    return receiving, sending


async def take(source: RelayedSource, count: int) -> list[ConfigUpdate]:
    got: list[ConfigUpdate] = []
    async with asyncio.timeout(10):
        async for update in source.watch():
            got.append(update)
            if len(got) == count:
                return got
    return got


async def test_workers_follow_the_updates_in_order_credentials_included() -> None:
    broadcaster = Broadcaster()
    receiving, sending = pipe()
    await broadcaster.attach(0, sending)
    source = RelayedSource(receiving)
    teed = [u async for u in broadcaster.source(Static(LOADED_A), lambda u: u).watch()]
    assert teed == [LOADED_A]  # the supervisor applies the same updates
    (got,) = await take(source, 1)
    assert got == LOADED_A and isinstance(got, ConfigLoaded) and got.credentials == {"ns/s/key": "sk-secret"}
    # updates published faster than the worker reads may be coalesced, never reordered
    teed = [u async for u in broadcaster.source(Static(REJECTED, LOADED_B), lambda u: u).watch()]
    assert teed == [REJECTED, LOADED_B]
    seen = await take(source, 1)
    while seen[-1] != LOADED_B:
        seen += await take(source, 1)
    assert seen in ([REJECTED, LOADED_B], [LOADED_B])
    await broadcaster.close()


async def test_a_late_worker_starts_in_the_groups_state() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(LOADED_A)
    broadcaster.publish(REJECTED)
    receiving, sending = pipe()
    await broadcaster.attach(1, sending)
    assert await take(RelayedSource(receiving), 2) == [LOADED_A, REJECTED]
    broadcaster.publish(LOADED_B)  # a good config clears the rejection from the replay
    later, sending = pipe()
    await broadcaster.attach(2, sending)
    assert await take(RelayedSource(later), 1) == [LOADED_B]
    assert not later.poll(0.2)  # nothing else was replayed
    await broadcaster.close()


async def test_a_dead_worker_does_not_block_the_others() -> None:
    broadcaster = Broadcaster()
    dead_end, dead = pipe()
    alive_end, alive = pipe()
    await broadcaster.attach(0, dead)
    await broadcaster.attach(1, alive)
    dead_end.close()  # the worker process died
    broadcaster.publish(LOADED_A)
    assert await take(RelayedSource(alive_end), 1) == [LOADED_A]
    await broadcaster.close()


async def test_a_config_the_supervisor_refused_reaches_workers_as_a_rejection() -> None:
    broadcaster = Broadcaster()
    receiving, sending = pipe()
    await broadcaster.attach(0, sending)
    refused = ConfigRejected("files", ("runtime refused it",))
    judged = [
        u
        async for u in broadcaster.source(
            Static(LOADED_A, LOADED_B), lambda u: refused if u is LOADED_B else u
        ).watch()
    ]
    assert judged == [LOADED_A, LOADED_B]  # the supervisor's applier sees what the source said
    assert await take(RelayedSource(receiving), 2) == [LOADED_A, refused]
    late_end, late = pipe()
    await broadcaster.attach(1, late)  # a restarted worker starts from the config served
    assert await take(RelayedSource(late_end), 2) == [LOADED_A, refused]
    await broadcaster.close()


async def test_a_stuck_worker_delays_nobody_and_gets_only_the_newest_state() -> None:
    big = ConfigLoaded(CONFIG_A, {f"ns/s/k{i}": "x" * 100 for i in range(2000)}, "files")  # > a pipe buffer
    broadcaster = Broadcaster()
    stuck_end, stuck = pipe()
    alive_end, alive = pipe()
    await broadcaster.attach(0, stuck)
    await broadcaster.attach(1, alive)
    broadcaster.publish(big)  # returns at once although worker 0 reads nothing
    broadcaster.publish(LOADED_A)
    broadcaster.publish(LOADED_B)
    got = await take(RelayedSource(alive_end), 1)
    assert got[-1] in (big, LOADED_A, LOADED_B)
    while got[-1] != LOADED_B:
        got += await take(RelayedSource(alive_end), 1)
    # the stuck worker reads late: the message in flight, then only the newest state
    late = await take(RelayedSource(stuck_end), 1)
    while late[-1] != LOADED_B:
        late += await take(RelayedSource(stuck_end), 1)
    assert len(late) <= 2
    await broadcaster.close()


async def test_a_gone_supervisor_ends_the_updates_without_ending_the_watch() -> None:
    receiving, sending = pipe()
    sending.send_bytes(encode_update(LOADED_A))
    sending.close()
    source = RelayedSource(receiving)
    watch = source.watch()
    assert await anext(watch) == LOADED_A
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the worker keeps serving; its parent watch drains it
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_the_supervisor_relays_a_config_its_runtime_refused_as_a_rejection() -> None:
    """A ProxyConfig can parse and still be refused by the runtime (an openai backend without a
    url): a worker restarted afterwards must get the config the group serves, not that one."""
    good = LOADED_A
    bad = ConfigLoaded(make_config([make_backend("b", None)], [make_route("m", [("b", 1)])]), {}, "files")
    runtime = ProxyRuntime()
    applier = ConfigApplier(runtime, announce=False)
    broadcaster = Broadcaster()
    async for update in broadcaster.source(Static(good, bad), judged_by(runtime)).watch():
        applier.handle(update)
    assert runtime.table is not None and runtime.table.revision == CONFIG_A.revision
    receiving, sending = pipe()
    await broadcaster.attach(0, sending)  # a worker restarted after the bad config
    worker = ProxyRuntime()
    worker_applier = ConfigApplier(worker, announce=False)
    got = await take(RelayedSource(receiving), 2)
    assert [type(u) for u in got] == [ConfigLoaded, ConfigRejected]
    for update in got:
        worker_applier.handle(update)
    assert worker.table is not None and worker.table.revision == CONFIG_A.revision
    await broadcaster.close()


async def test_a_message_a_worker_cannot_read_is_a_rejection(caplog: pytest.LogCaptureFixture) -> None:
    receiving, sending = pipe()
    sending.send_bytes(encode_update(LOADED_A))
    sending.send_bytes(b"\x80\x05not an update")
    sending.send_bytes(encode_update(LOADED_B))
    runtime = ProxyRuntime()
    applier = ConfigApplier(runtime, announce=False)
    with caplog.at_level(logging.ERROR, logger="routeway.proxy"):
        got = await take(RelayedSource(receiving), 3)
        for update in got[:2]:
            applier.handle(update)
    assert got[0] == LOADED_A and got[2] == LOADED_B
    assert isinstance(got[1], ConfigRejected) and "cannot be read: update is not JSON" in got[1].errors[0]
    assert runtime.config == CONFIG_A and runtime.last_rejection is not None  # still serving A
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # said once, not at debug only
    sending.close()


async def test_an_update_json_cannot_carry_goes_out_as_a_rejection(caplog: pytest.LogCaptureFixture) -> None:
    broadcaster = Broadcaster()
    receiving, sending = pipe()
    await broadcaster.attach(0, sending)
    broadcaster.publish(LOADED_A)
    unsendable = ConfigLoaded(CONFIG_B, {"ns/s/key": "sk-secret\udce9"}, "files")
    with caplog.at_level(logging.ERROR, logger="routeway.proxy"):
        broadcaster.publish(unsendable)
    got = await take(RelayedSource(receiving), 2)
    assert got[0] == LOADED_A  # the workers keep serving what they had
    rejection = got[1]
    assert isinstance(rejection, ConfigRejected) and "credential ns/s/key" in rejection.errors[0]
    assert "sk-secret" not in caplog.text and "sk-secret" not in rejection.errors[0]
    await broadcaster.close()
