"""The I/O half of rollouts under `routeway serve`: time, observations and the admin endpoints.

`RolloutDriver` wraps the pure `ServeRollouts` (routeway.serve_rollouts) and is owned by
`LocalManifestSource`. It merges three things into the one stream of config updates the proxy
applies:

- the files: each good read is handed to `ServeRollouts.load` and served with the routes' arms
  put in (a rejected read passes through unchanged: the last good config keeps serving);
- time: a timer wakes when a route's `wake_at` comes, and at least every `SAMPLE_EVERY`
  seconds while a route has an analysis, to read the proxy group's observations in-process
  (`SourceHost.observations()`) into a sample stamped with this process's clock, then steps
  the routes that are due;
- people: `POST /rollouts/{namespace}/{name}/{action}` on the admin port (refused with 403
  when a browser sends it: any web page can post to 127.0.0.1).

Whenever what is served changes (a weight, an arm, a rollback) a new `ConfigLoaded` follows.
If the files are broken at that moment, their rejection is repeated after it, so `/routes`
keeps showing why the files are not being served.

The admin endpoints are registered through the host (`SourceHost.add_admin_route`), so only
`routeway serve` has them; a `routeway proxy` pod's admin port stays read-only. serve's admin
port binds `--host`, 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.local import LocalLoad
from routeway.rollout.observations import report_from_json
from routeway.rollout.state import ACTION_KINDS
from routeway.serve_rollouts import ServeRollouts, UnknownRoute

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("routeway.serve")

SAMPLE_EVERY = 1.0
"""Seconds between reads of the observations while a route has an analysis: a window of a few
seconds (the demo's, the tests') still holds several samples."""

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class SourceHost(Protocol):
    """What the proxy process that reads a config source offers it (routeway_proxy.source_host)."""

    def observations(self) -> Any: ...  # the /observations document (or an awaitable of it)

    def add_admin_route(self, method: str, path: str, handler: Handler) -> None: ...


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_CHANGED = object()  # the served config changed outside a file read


class RolloutDriver:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.rollouts = ServeRollouts()
        self._clock = clock
        self._host: SourceHost | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._poke: asyncio.Event | None = None
        self._last_sample = float("-inf")
        self._report_problem: str | None = None
        self._source = ""

    # ------------------------------------------------------------------ wiring

    def attach(self, host: SourceHost) -> None:
        """Called by the proxy before `watch()`: observations to read, admin routes to add."""
        self._host = host
        host.add_admin_route("GET", "/rollouts", self.get_rollouts)
        host.add_admin_route("GET", "/rollouts/{namespace}/{name}", self.get_rollout)
        host.add_admin_route("POST", "/rollouts/{namespace}/{name}/{action}", self.post_action)

    async def updates(
        self, reads: AsyncIterator[LocalLoad | ConfigRejected], source: str
    ) -> AsyncIterator[ConfigUpdate]:
        """The files' reads (good ones as `LocalLoad`) → what to serve, with every change a
        rollout makes in between."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queue, self._poke, self._source = queue, asyncio.Event(), source

        async def pump() -> None:
            try:
                async for read in reads:
                    queue.put_nowait(read)
            except Exception as exc:  # the caller (ConfigApplier) logs it and reopens
                queue.put_nowait(_Failed(exc))

        tasks = [
            asyncio.create_task(pump(), name="serve-files"),
            asyncio.create_task(self._timer(), name="serve-rollouts"),
        ]
        good: LocalLoad | None = None
        rejected: ConfigRejected | None = None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Failed):
                    raise item.error
                if isinstance(item, ConfigRejected):
                    rejected = item
                    yield item
                elif isinstance(item, LocalLoad):
                    good, rejected = item, None
                    yield self._load(item)
                elif item is _CHANGED and good is not None:
                    yield self._loaded(good, ())
                    if rejected is not None:
                        yield rejected
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._queue is queue:
                self._queue = None

    def _load(self, read: LocalLoad) -> ConfigUpdate:
        assert read.config is not None
        specs = {
            f"{r.namespace}/{r.name}": r.spec.model_dump(by_alias=True, mode="json") for r in read.routes
        }
        problems = self.rollouts.load(
            read.config,
            specs,
            self._clock(),
            backends=read.backend_ids,
            credentials=read.credentials,
            lookup=read.lookup,
        )
        for problem in problems:
            log.warning("%s", problem)
        if self._poke is not None:
            self._poke.set()  # a rollout may have started: the timer looks at its wake time
        return self._loaded(read, tuple(problems))

    def _loaded(self, read: LocalLoad, problems: tuple[str, ...]) -> ConfigLoaded:
        served = self.rollouts.served()
        assert served is not None
        return ConfigLoaded(served, self.rollouts.credentials, self._source, (*read.problems, *problems))

    def _changed(self, before: str | None) -> None:
        served = self.rollouts.served()
        if served is not None and served.revision != before and self._queue is not None:
            self._queue.put_nowait(_CHANGED)

    # ------------------------------------------------------------------ time

    async def _timer(self) -> None:
        assert self._poke is not None
        while True:
            wait = SAMPLE_EVERY
            due = self.rollouts.next_wake()
            if due is not None:
                wait = min(wait, max(due - self._clock(), 0.0) + 0.005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), wait)
            self._poke.clear()
            try:
                await self.step()
            except Exception:  # a bug must not stop every later rollout step
                log.exception("rollout step failed")

    async def step(self) -> None:
        """Read the observations when worth it, then step the routes that are due."""
        now = self._clock()
        due = self.rollouts.next_wake()
        if self.rollouts.has_analysis and (
            now - self._last_sample >= SAMPLE_EVERY or (due is not None and due <= now)
        ):
            await self._sample()
        before = self.rollouts.served()
        self.rollouts.tick(self._clock())
        self._changed(before.revision if before is not None else None)

    async def _sample(self) -> None:
        if self._host is None:
            return
        try:
            # with workers the group's observations are read from files: off the loop
            document = await asyncio.to_thread(self._host.observations)
            if inspect.isawaitable(document):
                document = await document
            report = report_from_json(cast(Mapping[str, Any], document))
        except Exception as exc:  # a malformed report: analysis then sees no new traffic
            problem = f"cannot read the proxy's observations: {type(exc).__name__}: {exc}"
            if problem != self._report_problem:
                log.warning("%s", problem)
                self._report_problem = problem
            return
        self._report_problem = None
        self._last_sample = now = self._clock()
        self.rollouts.observe(report, now)

    # ------------------------------------------------------------------ admin

    async def get_rollouts(self, request: web.Request) -> web.StreamResponse:
        return _json({"rollouts": self.rollouts.documents()})

    async def get_rollout(self, request: web.Request) -> web.StreamResponse:
        route_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        try:
            return _json(self.rollouts.document(route_id))
        except UnknownRoute:
            return _error(404, f"no route {route_id} is being served", "route_not_found")

    async def post_action(self, request: web.Request) -> web.StreamResponse:
        if "Origin" in request.headers or request.headers.get("Sec-Fetch-Site", "none") not in (
            "none",
            "same-origin",
        ):
            # A browser: a page the developer has open reaches 127.0.0.1 too (a cross-site form
            # post needs no preflight; a DNS-rebound page looks same-origin), and browsers send
            # Origin with every POST. The CLI, curl and scripts send none.
            return _error(403, "rollout actions are not accepted from a web page", "forbidden")
        route_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        kind = request.match_info["action"]
        if kind not in ACTION_KINDS:
            return _error(
                400, f"unknown action {kind!r}: use one of {', '.join(ACTION_KINDS)}", "invalid_action"
            )
        revision: str | None = None
        if kind == "undo":
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            revision = body.get("revision") if isinstance(body, dict) else None
            if not isinstance(revision, str) or not revision:
                return _error(400, 'undo takes a JSON body {"revision": "<hash>"}', "invalid_body")
        before = self.rollouts.served()
        try:
            result = self.rollouts.act(route_id, kind, self._clock(), revision)
        except UnknownRoute:
            return _error(404, f"no route {route_id} is being served", "route_not_found")
        self._changed(before.revision if before is not None else None)
        if self._poke is not None:
            self._poke.set()
        if result.refused is not None:
            return _error(409, result.refused, "action_refused")
        return _json(result.document)


def _json(document: Any, status: int = 200) -> web.StreamResponse:
    from aiohttp import web

    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


def _error(status: int, message: str, code: str) -> web.StreamResponse:
    """The OpenAI error shape, as every other error the gateway answers."""
    return _json(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}, status
    )
