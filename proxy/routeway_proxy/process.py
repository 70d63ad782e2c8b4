"""Running the proxy: serving processes, signals and drain (the apply loop and the
`ConfigSource` seam are in config_apply.py).

Shape of a running proxy:

- `workers == 1`: one process serves the client port and the admin port, runs the config
  source and applies what it yields to its `ProxyRuntime`.
- `workers > 1`: a supervisor process reserves the client port, spawns N workers that each
  bind it with SO_REUSEPORT (the kernel spreads connections across them), and serves the
  admin port itself. Only the supervisor runs the config source; it applies each update to
  its own runtime (for `/config` and `/routes`) and relays what it then serves to every
  worker over a pipe (`relay.py`), so a config is read and translated once and all workers
  converge on the supervisor's revision (for a moment after a change some may still serve
  the previous one; each request sees one complete config). Workers write metrics through prometheus-client's
  multiprocess mode into a fresh directory; the supervisor's `/metrics` aggregates them, so
  a scrape describes the whole group, not whichever worker answered.

Workers are started with `spawn`, not `fork`: a fresh interpreter inherits no event loop or
half-initialised client session, and imports prometheus-client after PROMETHEUS_MULTIPROC_DIR
is in its environment (multiprocess mode is chosen at import time). The supervisor imports
prometheus-client before setting that variable, so its own metrics stay out of the sum.

Drain (SIGTERM or SIGINT): stop accepting (listeners closed), `/readyz` answers 503, requests
in flight — streams included — finish within `drain_timeout`, then exit 0. The supervisor
forwards the signal to its workers and exits 0 once they all did. A second signal to a
single process (or the supervisor) stops waiting and exits 1; workers ignore repeats,
because Ctrl-C reaches the whole process group and the supervisor forwards it as well.

The seam for other config sources (an in-cluster ConfigMap/Secret watch): implement
`ConfigSource` — an object whose `watch()` yields `ConfigLoaded`/`ConfigRejected`, the update
types of the pure core (`routeway.configupdate`, which also defines the JSON message that
carries them to the workers). A source may also define `attach(host)`: the process that reads
it (the single process, or the supervisor) hands it a `source_host.SourceHost` (the group's
observations, admin routes) before opening `watch()`.

Logging: `ConfigApplier` (config_apply.py) is the one place that logs a config load or
rejection, once for the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from routeway_proxy.client_conn import ClientConnections, ConnectionLimits
from routeway_proxy.client_site import start_client_site
from routeway_proxy.config_apply import ConfigApplier, ConfigSource
from routeway_proxy.source_host import SourceHost, attach_source

if TYPE_CHECKING:
    pass

log = logging.getLogger("routeway.proxy")

LISTEN_BACKLOG = 1024
"""Pending connections per listener (the kernel caps it at somaxconn): bursts wait, not fail."""

ADMIN_SHUTDOWN_TIMEOUT = 1.0
"""Admin requests (scrapes, probes) are short; they do not get the client's grace period."""


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    admin_port: int
    admin_host: str | None = None  # --admin-host; None: the client port's `host`
    workers: int = 1
    drain_timeout: float = 30.0
    worker_timeout: float = 30.0  # a worker whose loop is silent this long is replaced (0: never)
    log_level: str = "info"
    access_log: bool = False  # --access-log: one JSON line per request on stdout (access_log.py)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)  # client_conn.py
    command: str = "routeway proxy"  # for log lines


def configure_logging(level: str) -> None:
    """One format for every process; the pid tells workers apart."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s[%(process)d] %(message)s",
        stream=sys.stderr,
        force=True,
    )


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop when it is installed (faster sockets and timers), else asyncio."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def run_proxy(source: ConfigSource, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    configure_logging(options.log_level)
    if options.workers > 1:
        from routeway_proxy.supervisor import supervise

        return run_async(supervise(source, options))
    return run_async(serve_process(source, options, role=ProcessRole.single()))


# --- one serving process ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRole:
    """What this process does besides serving the client port."""

    serve_admin: bool
    announce: bool  # log config loads at info level
    worker_index: int | None = None  # None: a single process, not a supervisor's worker

    @classmethod
    def single(cls) -> ProcessRole:
        return cls(serve_admin=True, announce=True)


class StopSignals:
    """SIGTERM/SIGINT → `first` (drain); another one → `second` (give up waiting)."""

    def __init__(self, *, ignore_repeats: bool) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self._ignore_repeats = ignore_repeats

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.receive, sig)

    def receive(self, sig: signal.Signals | None = None) -> None:
        name = sig.name if sig is not None else "stop"
        if not self.first.is_set():
            log.debug("%s received", name)
            self.first.set()
        elif not self._ignore_repeats and not self.second.is_set():
            log.warning("%s received again: not waiting for requests in flight", name)
            self.second.set()


def add_readiness_gate(app: web.Application, not_ready: Callable[[], str | None]) -> None:
    """Answer `/readyz` with 503 while `not_ready()` gives a reason (draining, workers not up),
    before the admin app's own check (config loaded) runs."""

    @web.middleware
    async def readiness_gate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/readyz":
            reason = not_ready()
            if reason is not None:
                return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return await handler(request)

    app.middlewares.insert(0, readiness_gate)


async def start_site(runner: web.AppRunner, host: str, port: int, what: str, *, shared: bool = False) -> int:
    """Bind and listen; returns the bound port.

    `shared`: SO_REUSEPORT, only for workers joining their supervisor's port. Anything else
    binds exclusively, so a second `routeway` started on a busy port fails loudly instead of
    silently taking half of the first one's connections.
    """
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=shared or None, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        raise ListenError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    return site.port


async def start_client_port(
    runner: web.AppRunner, connections: ClientConnections, options: ServeOptions, *, shared: bool
) -> int:
    """Listen for clients through the connection layer (client_conn.py); returns the bound port.
    `shared` as in `start_site`."""
    await runner.setup()
    try:
        site = await start_client_site(
            runner, connections, options.host, options.port, backlog=LISTEN_BACKLOG, reuse_port=shared
        )
    except OSError as exc:
        raise ListenError(
            f"cannot listen for clients on {options.host}:{options.port}: {exc.strerror}"
        ) from None
    return site.port


def describe_listening(options: ServeOptions, port: int, admin_port: int, source: ConfigSource) -> str:
    workers = f" with {options.workers} workers" if options.workers > 1 else ""
    return (
        f"{options.command} listening on http://{options.host}:{port}{workers} "
        f"(admin on http://{admin_address(options)}:{admin_port}), config from {source.describe()}"
    )


def admin_address(options: ServeOptions) -> str:
    """Where the admin port listens: `--admin-host`, else the clients' address."""
    return options.admin_host if options.admin_host is not None else options.host


class ListenError(RuntimeError):
    """The port is taken or the address is not ours: nothing to serve, exit 1."""


def freeze_startup_heap() -> None:
    """Move everything alive after startup (modules, the first config, the app) out of the
    garbage collector's reach.

    Why: those objects live as long as the process, yet every full collection walks them all
    again; at high concurrency more request objects survive into the older generations and
    full collections come often, which showed as a doubled p99 under 64 connections
    (bench/RESULTS.md). Frozen objects are still freed by reference counting; only cycles
    among them would stay, and they are startup objects meant to stay anyway.
    """
    gc.collect()
    gc.freeze()


async def serve_process(
    source: ConfigSource,
    options: ServeOptions,
    *,
    role: ProcessRole,
    on_listening: Callable[[], None] | None = None,
) -> int:
    """Serve the client port (and the admin port in a single process) until stopped."""
    from routeway_proxy.app import APP_RUNNER_OPTIONS, create_admin_app, create_proxy_app
    from routeway_proxy.runtime import ProxyRuntime

    signals = StopSignals(ignore_repeats=role.worker_index is not None)
    signals.install()
    from routeway_proxy.limits.shared import TABLE_ENV

    # a worker enforces limits in its group's table (the supervisor made it: supervisor.py)
    table = os.environ.get(TABLE_ENV) if role.worker_index is not None else None
    runtime = ProxyRuntime(count_reloads=role.worker_index in (None, 0), limits_table=table)
    if options.access_log:
        from routeway_proxy.access_log import AccessLog, configure_access_log

        configure_access_log()
        runtime.metrics.access = AccessLog()
    host = None
    if role.serve_admin:  # this process reads the source: offer it the host before watch()
        host = SourceHost(runtime, runtime.metrics.arms.collect)
        attach_source(source, host)
    applier = ConfigApplier(runtime, announce=role.announce)
    apply_task = asyncio.create_task(applier.run(source), name="apply-config")
    if role.worker_index is not None:
        watch_parent(signals)
    # The first config is applied before listening, so the first request does not see a 503.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(applier.first_update.wait(), timeout=10.0)
    freeze_startup_heap()

    proxy_runner = web.AppRunner(
        create_proxy_app(runtime),
        access_log=None,
        shutdown_timeout=options.drain_timeout,
        **APP_RUNNER_OPTIONS,  # handler_cancellation: a client that leaves cancels its upstream call
    )
    admin_runner: web.AppRunner | None = None
    drained = False
    try:
        shared = role.worker_index is not None
        connections = ClientConnections(options.connections, runtime.metrics)
        port = await start_client_port(proxy_runner, connections, options, shared=shared)
        if role.serve_admin:
            admin_app = create_admin_app(runtime, host=host)
            add_readiness_gate(admin_app, lambda: "draining" if signals.first.is_set() else None)
            admin_runner = web.AppRunner(admin_app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_TIMEOUT)
            admin_port = await start_site(admin_runner, admin_address(options), options.admin_port, "admin")
            log.info("%s", describe_listening(options, port, admin_port, source))
        else:
            log.debug("worker %s listening on http://%s:%d", role.worker_index, options.host, port)
        if on_listening is not None:
            on_listening()
        await signals.first.wait()
        drained = True
        code = await drain(proxy_runner, signals, options.drain_timeout, announce=role.announce)
    except ListenError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        try:
            await cancel_tasks(apply_task)
            if admin_runner is not None:
                await admin_runner.cleanup()
            if not drained:
                await proxy_runner.cleanup()
        finally:
            runtime.metrics.ledger.flush()  # a worker's last requests reach the shared files
    return code


async def drain(runner: web.AppRunner, signals: StopSignals, grace: float, *, announce: bool) -> int:
    """Close the listener, let requests in flight finish (the runner's shutdown_timeout), clean up.

    Returns 0 when everything finished, 1 when a second signal cut the wait short.
    """
    server = runner.server
    open_connections = len(server.connections) if server is not None else 0
    level = logging.INFO if announce else logging.DEBUG
    log.log(
        level, "draining: stopped accepting, %d connections open, waiting up to %gs", open_connections, grace
    )
    cleanup = asyncio.create_task(runner.cleanup(), name="drain")
    abort = asyncio.create_task(signals.second.wait())
    # When the grace period is over, requests still in flight are answered "shutting down"
    # (a stream gets an error event) before aiohttp cancels them and closes their connections.
    overdue = asyncio.get_running_loop().call_later(grace, _end_overdue_requests, runner.app, level)
    try:
        await asyncio.wait({cleanup, abort}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        abort.cancel()
        overdue.cancel()
    if cleanup.done():
        cleanup.result()
        log.log(level, "drained; exiting")
        return 0
    cleanup.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cleanup
    return 1


def _end_overdue_requests(app: web.Application, level: int) -> None:
    from routeway_proxy.app import abort_in_flight

    ended = abort_in_flight(app)
    if ended:
        log.log(level, "drain grace period over: ending %d requests with a shutdown error", ended)


def watch_parent(signals: StopSignals) -> None:
    """A worker whose supervisor died (SIGKILL, OOM) drains instead of serving orphaned.

    multiprocessing gives a spawned child a sentinel that turns readable when the parent exits.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    loop = asyncio.get_running_loop()
    sentinel = parent.sentinel

    def parent_gone() -> None:
        loop.remove_reader(sentinel)
        log.warning("supervisor %s is gone; draining", parent.pid)
        signals.receive()

    loop.add_reader(sentinel, parent_gone)


async def cancel_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
