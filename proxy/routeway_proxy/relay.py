"""Config updates from the supervisor to its workers: read and translated once, sent to all.

Why relay instead of every worker watching the source itself: translating a large config is
seconds of CPU (10,000 routes: ~3.6 s), which every worker and the supervisor used to spend
on every change; and workers that each read the files at slightly different moments could
serve different revisions, or one could reject a half-written file the others never saw.
Here the supervisor's source is the only reader; each worker gets the same updates, in the
same order, over its own pipe (credentials included: a pipe between the two processes, never
a file), as the canonical JSON message of `routeway.configupdate` — encoded once per update
for all workers, and checked by each worker as it reads it.

What is relayed is what the supervisor's own runtime made of an update: a config it refused
to serve goes out as a rejection, so no worker serves what the group does not.

Each worker has a mailbox holding the group's state (the last config served, and the last
rejection if one came after it) and its own sender: a worker that reads slowly — or not at
all, while its loop is blocked — delays nobody else and receives only the newest state when
it reads again. A worker started later (or restarted) starts from that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection

from routeway.configupdate import (
    ConfigLoaded,
    ConfigRejected,
    ConfigUpdate,
    UndecodableUpdate,
    UnencodableUpdate,
    decode_update,
    encode_update,
)
from routeway_proxy.config_apply import ConfigSource

log = logging.getLogger("routeway.proxy.process")

SUPERVISOR = "the supervisor"


class RelayedSource:
    """A worker's config source: the updates its supervisor sends down `connection`.

    `on_busy(True)` is called just before an update is decoded and then applied, which
    together block the loop for seconds with a large config, and `on_busy(False)` once the
    consumer asks for the next update, i.e. when it has applied this one (the worker uses it to
    tell the supervisor's hang check that it is busy, not stuck, and exactly for how long)."""

    def __init__(self, connection: Connection, on_busy: Callable[[bool], None] | None = None) -> None:
        self._connection = connection
        self._on_busy = on_busy

    def describe(self) -> str:
        return SUPERVISOR

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        loop = asyncio.get_running_loop()
        connection = self._connection
        while True:
            while not connection.poll():
                await _readable(loop, connection.fileno())
            try:
                # in a thread: a large config arrives over several pipe buffers, and the loop
                # keeps serving requests meanwhile
                payload = await asyncio.to_thread(connection.recv_bytes)
            except EOFError:
                # The supervisor is gone: the parent watch drains this worker; nothing more
                # will come, so stop reading without ending the watch.
                await asyncio.Event().wait()
            on_busy = self._on_busy
            if on_busy is not None:
                on_busy(True)
            yield read_update(payload)  # applied by the consumer before it asks for the next one
            if on_busy is not None:
                on_busy(False)


def read_update(payload: bytes) -> ConfigUpdate:
    """A worker's view of one message: a message it cannot read (a bug: the supervisor runs the
    same installation) is a rejection, so the last good config keeps serving, and is logged
    here at error level because a worker logs its updates at debug level only."""
    try:
        return decode_update(payload)
    except UndecodableUpdate as exc:
        log.error("config update from the supervisor cannot be read: %s", exc)
        return ConfigRejected(SUPERVISOR, (f"update from the supervisor cannot be read: {exc}",))


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until `fd` can be read. The reader is registered only while waiting, so a watch
    that was abandoned (its generator not yet finalised) cannot unregister a newer one's."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class _Mailbox:
    """One worker's pending state and the task that sends it."""

    def __init__(
        self, index: int, connection: Connection, loaded: bytes | None, rejected: bytes | None
    ) -> None:
        self.index = index
        self.connection = connection
        self.loaded = loaded
        self.rejected = rejected
        self.ready = asyncio.Event()
        if loaded is not None or rejected is not None:
            self.ready.set()
        self.sender = asyncio.get_running_loop().create_task(self._send_forever(), name=f"relay-{index}")

    def post(self, payload: bytes, loaded: bool) -> None:
        if loaded:
            self.loaded, self.rejected = payload, None
        else:
            self.rejected = payload
        self.ready.set()

    async def _send_forever(self) -> None:
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                loaded, rejected = self.loaded, self.rejected
                self.loaded = self.rejected = None
                for payload in (loaded, rejected):
                    if payload is not None:
                        # in a thread: a large config fills the pipe; the worker reads as it can
                        await asyncio.to_thread(self.connection.send_bytes, payload)
        except (OSError, ValueError):  # the worker died (its replacement gets a new mailbox)
            log.debug("worker %d stopped taking config updates", self.index, exc_info=True)

    async def close(self) -> None:
        self.sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sender
        self.connection.close()


Judge = Callable[[ConfigUpdate], ConfigUpdate]
"""What the supervisor made of an update: the update itself, or a rejection if it refused it."""


class Broadcaster:
    """The supervisor's end: keeps the group's state and posts each update to every worker."""

    def __init__(self) -> None:
        self._mailboxes: dict[int, _Mailbox] = {}  # by worker index
        self._loaded: bytes | None = None
        self._rejected: bytes | None = None  # the last rejection, if newer than `_loaded`

    def source(self, inner: ConfigSource, judge: Judge) -> ConfigSource:
        """`inner` for the supervisor's applier; once it has applied an update, what `judge`
        says it made of it goes to the workers."""
        return _Teed(inner, self, judge)

    async def attach(self, index: int, connection: Connection) -> None:
        """A new worker's pipe: it gets the group's state now, then every update."""
        old = self._mailboxes.pop(index, None)
        if old is not None:
            await old.close()
        self._mailboxes[index] = _Mailbox(index, connection, self._loaded, self._rejected)

    def publish(self, update: ConfigUpdate) -> None:
        try:
            payload = encode_update(update)
        except UnencodableUpdate as exc:  # workers keep their config rather than get half of one
            log.error("config from %s cannot be sent to the workers: %s", update.source, exc)
            update = ConfigRejected(update.source, (f"cannot be sent to the workers: {exc}",))
            payload = encode_update(update)
        loaded = isinstance(update, ConfigLoaded)
        if loaded:
            self._loaded, self._rejected = payload, None
        else:
            self._rejected = payload
        for mailbox in self._mailboxes.values():
            mailbox.post(payload, loaded)

    async def close(self) -> None:
        mailboxes = list(self._mailboxes.values())
        self._mailboxes.clear()
        for mailbox in mailboxes:
            await mailbox.close()


class _Teed:
    def __init__(self, inner: ConfigSource, broadcaster: Broadcaster, judge: Judge) -> None:
        self._inner = inner
        self._broadcaster = broadcaster
        self._judge = judge

    def describe(self) -> str:
        return self._inner.describe()

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        async for update in self._inner.watch():
            yield update  # the supervisor applies it before asking for the next one
            self._broadcaster.publish(self._judge(update))
