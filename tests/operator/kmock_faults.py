"""An API server that misbehaves on request: the kmock emulator of kmock_ext.py plus faults.

The operator's fault tests (test_operator_faults*.py) need what a real API server does on a
bad day, each switched on by the test and off by default:

- errors on chosen requests (`fail`): any status, on reads, lists, watches or writes; a write
  can be applied before its answer is lost (`applied=True`: a 500/504 after the commit);
- a parked request (`hold`): the request waits, applied or not, until the test releases it,
  so a test can stop the operator exactly between two of its writes;
- watch streams that close early or with an ``ERROR 410 Gone`` event (`cut_watches`), or
  stay open while delivering nothing (`cut_watches(hang=True)`);
- resuming a watch from a resourceVersion replays deletions too (a real server's watch cache
  does; kmock_ext replays only the objects that still exist), and after `compact()` a resume
  from an older resourceVersion gets ``ERROR 410 Gone``, as after etcd compaction.

Kept out of kmock_ext.py so that the emulator every other test uses stays as it is; the
subclass overrides `_handle`, `_remove` and `_serve_watch` of kmock_ext's emulator and, like
it, relies on kmock 0.8 internals (tests/operator/test_operator_faults_kmock.py pins them).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, references, rendering
from kmock_ext import RoutewayEmulator

GONE = {
    "type": "ERROR",
    "object": {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "reason": "Expired",
        "message": "too old resource version",
        "code": 410,
    },
}


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status`."""

    method: str
    path_contains: str
    status: int
    times: int
    watch: bool | None  # None: any GET; True: only watches; False: only non-watch requests
    applied: bool  # the write happens, then its answer is lost

    def matches(self, request: rendering.Request) -> bool:
        if self.times <= 0 or request.method != self.method or self.path_contains not in request.url.path:
            return False
        return self.watch is None or self.watch == (request.action == enums.action.WATCH)


HoldMode = Literal["unapplied", "applied", "delayed"]


@dataclass
class Hold:
    """Park the next matching request until `release()`; `arrived` is set when it comes.
    `unapplied`: parked before it takes effect, then answered 503 (never applied);
    `applied`: it takes effect, then its answer is parked; `delayed`: parked, then served."""

    method: str
    path_contains: str
    mode: HoldMode
    watch: bool | None
    name: str | None  # only the object of this name (in the path, or the body of a create)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    taken: bool = False

    def release(self) -> None:
        self.released.set()


@dataclass
class OpenWatch:
    path: str
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    hung: bool = False


def _body_name(request: rendering.Request) -> str | None:
    data = request.data if isinstance(request.data, dict) else {}
    name = (data.get("metadata") or {}).get("name")
    return str(name) if name else None


@attrs.define(kw_only=True)
class FaultyEmulator(RoutewayEmulator):
    """kmock_ext's emulator with the faults listed in the module docstring."""

    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _holds: list[Hold] = attrs.field(factory=list, init=False)
    _watches: list[OpenWatch] = attrs.field(factory=list, init=False)
    _tombstones: dict[tuple[Any, str | None, str], tuple[int, dict[str, Any]]] = attrs.field(
        factory=dict, init=False
    )
    _compacted: int = attrs.field(default=0, init=False)

    # ------------------------------------------------------------------ test controls

    def fail(
        self,
        method: str,
        path_contains: str,
        status: int,
        times: int = 1,
        *,
        watch: bool | None = None,
        applied: bool = False,
    ) -> Fault:
        fault = Fault(method.upper(), path_contains, status, times, watch, applied)
        self._faults.append(fault)
        return fault

    def hold(
        self,
        method: str,
        path_contains: str,
        mode: HoldMode,
        *,
        watch: bool | None = None,
        name: str | None = None,
    ) -> Hold:
        hold = Hold(method.upper(), path_contains, mode, watch, name)
        self._holds.append(hold)
        return hold

    def release_all(self) -> None:
        """Let every parked request and watch stream end (a test's teardown)."""
        for hold in self._holds:
            hold.release()
        for watch in self._watches:
            watch.cut.set()

    def open_watches(self, path_contains: str = "") -> int:
        """Watch streams open now and delivering (not hung) whose path contains the fragment."""
        return sum(1 for w in self._watches if path_contains in w.path and not w.hung and not w.cut.is_set())

    def cut_watches(self, path_contains: str = "", *, gone: bool = False, hang: bool = False) -> int:
        """End the open watch streams matching the fragment: close them (EOF), or send
        `ERROR 410 Gone` first (`gone`), or keep them open delivering nothing (`hang`)."""
        count = 0
        for w in self._watches:
            if path_contains in w.path and not w.cut.is_set() and not w.hung:
                count += 1
                if hang:
                    w.hung = True
                else:
                    w.gone = gone
                    w.cut.set()
        return count

    def compact(self) -> None:
        """Forget the history up to now: resuming a watch from an older version gets 410."""
        self._compacted = self.resource_version
        self._tombstones.clear()

    def writes_since(self, index: int) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.writes()[index:]]

    # ------------------------------------------------------------------ request handling

    def _take_fault(self, request: rendering.Request) -> Fault | None:
        for fault in self._faults:
            if fault.matches(request):
                fault.times -= 1
                return fault
        return None

    def _take_hold(self, request: rendering.Request) -> Hold | None:
        for hold in self._holds:
            if (
                not hold.taken
                and request.method == hold.method
                and hold.path_contains in request.url.path
                and (hold.watch is None or hold.watch == (request.action == enums.action.WATCH))
                and (hold.name is None or hold.name in (request.name, _body_name(request)))
            ):
                hold.taken = True
                return hold
        return None

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        fault = self._take_fault(request)
        hold = self._take_hold(request)
        if hold is not None and hold.mode != "applied":
            hold.arrived.set()
            await hold.released.wait()
            if hold.mode == "unapplied":
                raise kmock.KubernetesError(status=503, reason="Held", message="held, never applied")
            hold = None
        if fault is not None and not fault.applied:
            raise kmock.KubernetesError(
                status=fault.status, reason="Injected", message="injected by the test"
            )
        response = await super()._handle(request)
        if hold is not None:
            hold.arrived.set()
            await hold.released.wait()
        if fault is not None:
            raise kmock.KubernetesError(
                status=fault.status, reason="Injected", message="applied, answer lost"
            )
        return response

    async def _remove(self, res: references.resource, namespace: str | None, name: str) -> None:
        raw = copy.deepcopy(self._objects[res, namespace, name].raw)
        await super()._remove(res, namespace, name)
        raw["metadata"]["resourceVersion"] = str(self.resource_version)
        self._tombstones[res, namespace, name] = (self.resource_version, raw)

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """kmock_ext's watch, plus: deletions replayed on resume, 410 after compaction, and
        the stream controls of `cut_watches`."""
        assert request.resource is not None
        yield b""
        since_raw = request.params.get("resourceVersion", "")
        since = int(since_raw) if since_raw.isdigit() and since_raw != "0" else None
        if since is not None and since < self._compacted:
            yield GONE
            return
        timeout_raw = request.params.get("timeoutSeconds", "")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout_raw) if timeout_raw.isdigit() else None
        bus = self._buses[request.resource]
        async with self._lock:
            items = self._select(request)
            tombstones = [
                (rv, raw)
                for (res, _ns, _name), (rv, raw) in self._tombstones.items()
                if res == request.resource and since is not None and rv > since
            ]
            marker = await bus.mark()
        watch = OpenWatch(request.url.path)
        self._watches.append(watch)
        next_event: asyncio.Task[Any] | None = None
        cut = asyncio.ensure_future(watch.cut.wait())
        try:
            replay: list[tuple[int, dict[str, Any]]] = [
                (rv, {"type": "DELETED", "object": raw})
                for rv, raw in tombstones
                if self._matches_event(request, raw)
            ]
            for raw in items:
                rv = int(raw["metadata"].get("resourceVersion", "0"))
                if since is None:
                    replay.append((rv, {"type": "ADDED", "object": raw}))
                elif rv > since:
                    replay.append((rv, {"type": "MODIFIED", "object": raw}))
            for _, event in sorted(replay, key=lambda pair: pair[0]):
                yield event
            stream = bus.stream(since=marker).__aiter__()
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                if next_event is None:
                    next_event = asyncio.ensure_future(stream.__anext__())
                done, _ = await asyncio.wait(
                    {next_event, cut}, timeout=remaining, return_when="FIRST_COMPLETED"
                )
                if cut in done:
                    if watch.gone:
                        yield GONE
                    return
                if next_event not in done:
                    return  # timeoutSeconds passed
                event, next_event = next_event.result(), None
                if watch.hung:
                    continue  # a dead connection: nothing arrives, nothing closes
                raw = event.get("object", {})
                if since is not None and int(raw.get("metadata", {}).get("resourceVersion", "0")) <= since:
                    continue
                if self._matches_event(request, raw):
                    yield event
        finally:
            self._watches.remove(watch)
            for task in (next_event, cut):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await task
            await bus.unmark(marker)
