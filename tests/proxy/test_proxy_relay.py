"""The supervisor-to-worker config relay over real pipes: order, replay to late workers, and a
dead worker that does not stop the others' updates."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

from proxy_helpers import make_backend, make_config, make_route
from routeway.proxy.process import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.proxy.relay import Broadcaster, RelayedSource

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


async def test_workers_get_every_update_in_order_credentials_included() -> None:
    broadcaster = Broadcaster()
    receiving, sending = pipe()
    await broadcaster.attach(0, sending)
    teed = [u async for u in broadcaster.source(Static(LOADED_A, REJECTED, LOADED_B)).watch()]
    assert teed == [LOADED_A, REJECTED, LOADED_B]  # the supervisor applies the same updates
    got = await take(RelayedSource(receiving), 3)
    assert got == [LOADED_A, REJECTED, LOADED_B]
    assert isinstance(got[0], ConfigLoaded) and got[0].credentials == {"ns/s/key": "sk-secret"}
    broadcaster.close()


async def test_a_late_worker_starts_in_the_groups_state() -> None:
    broadcaster = Broadcaster()
    await broadcaster.publish(LOADED_A)
    await broadcaster.publish(REJECTED)
    receiving, sending = pipe()
    await broadcaster.attach(1, sending)
    assert await take(RelayedSource(receiving), 2) == [LOADED_A, REJECTED]
    await broadcaster.publish(LOADED_B)  # a good config clears the rejection from the replay
    later, sending = pipe()
    await broadcaster.attach(2, sending)
    assert await take(RelayedSource(later), 1) == [LOADED_B]
    assert not later.poll(0.2)  # nothing else was replayed
    broadcaster.close()


async def test_a_dead_worker_does_not_block_the_others() -> None:
    broadcaster = Broadcaster()
    dead_end, dead = pipe()
    alive_end, alive = pipe()
    await broadcaster.attach(0, dead)
    await broadcaster.attach(1, alive)
    dead_end.close()  # the worker process died
    await broadcaster.publish(LOADED_A)
    assert await take(RelayedSource(alive_end), 1) == [LOADED_A]
    broadcaster.close()


async def test_a_gone_supervisor_ends_the_updates_without_ending_the_watch() -> None:
    receiving, sending = pipe()
    sending.send_bytes(pickle.dumps(LOADED_A))
    sending.close()
    source = RelayedSource(receiving)
    watch = source.watch()
    assert await anext(watch) == LOADED_A
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the worker keeps serving; its parent watch drains it
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
