"""Config updates from the supervisor to its workers: read and translated once, sent to all.

Why relay instead of every worker watching the source itself: translating a large config is
seconds of CPU (10,000 routes: ~3.6 s), which every worker and the supervisor used to spend
on every change; and workers that each read the files at slightly different moments could
serve different revisions, or one could reject a half-written file the others never saw.
Here the supervisor's source is the only reader; each worker gets the same `ConfigUpdate`
objects, in the same order, over its own pipe (credentials included: a pipe between the two
processes, never a file).

A worker started later (or restarted) first gets the last loaded config, and the last
rejection if one came after it, so it starts in the state the group is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

from routeway.proxy.process import ConfigLoaded, ConfigSource, ConfigUpdate

log = logging.getLogger("routeway.proxy.process")


class RelayedSource:
    """A worker's config source: the updates its supervisor sends down `connection`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def describe(self) -> str:
        return "the supervisor"

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = self._connection.fileno()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                while self._connection.poll():
                    try:
                        payload = self._connection.recv_bytes()
                    except EOFError:
                        # The supervisor is gone: the parent watch drains this worker; nothing
                        # more will come, so stop reading without ending the watch.
                        loop.remove_reader(fd)
                        await asyncio.Event().wait()
                    update: ConfigUpdate = pickle.loads(payload)  # from our own parent process
                    yield update
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)


class Broadcaster:
    """The supervisor's end: remembers the group's state and sends each update to every worker."""

    def __init__(self) -> None:
        self._pipes: dict[int, Connection] = {}  # worker index -> sending end
        self._loaded: bytes | None = None
        self._rejected: bytes | None = None  # the last rejection, if newer than `_loaded`
        self._lock = asyncio.Lock()  # one update at a time, in order, to every worker

    def source(self, inner: ConfigSource) -> ConfigSource:
        """`inner`, with each update also sent to the workers (for the supervisor's applier)."""
        return _Teed(inner, self)

    async def attach(self, index: int, connection: Connection) -> None:
        """A new worker's pipe: it gets the group's state now, then every update."""
        async with self._lock:
            old = self._pipes.pop(index, None)
            if old is not None:
                old.close()
            self._pipes[index] = connection
            for payload in (self._loaded, self._rejected):
                if payload is not None:
                    await self._send(index, connection, payload)

    async def publish(self, update: ConfigUpdate) -> None:
        payload = pickle.dumps(update, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            if isinstance(update, ConfigLoaded):
                self._loaded, self._rejected = payload, None
            else:
                self._rejected = payload
            pipes = list(self._pipes.items())
            await asyncio.gather(*(self._send(index, connection, payload) for index, connection in pipes))

    def close(self) -> None:
        for connection in self._pipes.values():
            connection.close()
        self._pipes.clear()

    async def _send(self, index: int, connection: Connection, payload: bytes) -> None:
        # In a thread: a large config fills the pipe, and the worker reads it as it can.
        try:
            await asyncio.to_thread(connection.send_bytes, payload)
        except (OSError, ValueError):  # the worker died (its replacement will be attached)
            log.debug("worker %d did not take a config update", index, exc_info=True)


class _Teed:
    def __init__(self, inner: ConfigSource, broadcaster: Broadcaster) -> None:
        self._inner = inner
        self._broadcaster = broadcaster

    def describe(self) -> str:
        return self._inner.describe()

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        async for update in self._inner.watch():
            await self._broadcaster.publish(update)
            yield update
