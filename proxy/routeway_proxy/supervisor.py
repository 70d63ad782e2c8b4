"""Several worker processes behind one port: spawning, supervising, aggregating metrics.

Split from `process` so that one module holds what a single process does (sources, apply
loop, serving, drain) and this one what only a group needs. See `process`'s docstring for the
shape of a running group.

Why heartbeats: a worker whose event loop is stuck (a blocking call, a runaway loop) stays
alive, keeps its share of the port's connections and answers none of them, and nothing else
notices: the admin port (and so the kubelet's probes) is the supervisor's. Each worker's loop
writes the time into a shared slot every `HEARTBEAT_INTERVAL`; a worker silent for longer than
`--worker-timeout` is killed, and then restarted like a crashed one (`is_stuck` decides).
Two silences are not hangs: applying a large config blocks a worker's loop for seconds, so the
worker writes a time `APPLY_ALLOWANCE` ahead until it is done; and when the whole group was paused
(SIGSTOP, a frozen cgroup), the clock ran on without anyone beating, so silence only counts
from the moment the supervisor itself ran again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from aiohttp import web

from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway_proxy.config_apply import ConfigApplier, ConfigSource
from routeway_proxy.limits.shared import TABLE_ENV, make_table
from routeway_proxy.process import (
    ADMIN_SHUTDOWN_TIMEOUT,
    ListenError,
    ProcessRole,
    ServeOptions,
    StopSignals,
    add_readiness_gate,
    admin_address,
    cancel_tasks,
    configure_logging,
    describe_listening,
    run_async,
    serve_process,
    start_site,
)
from routeway_proxy.relay import Broadcaster, RelayedSource
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.source_host import SourceHost, attach_source

log = logging.getLogger("routeway.proxy.process")

HEARTBEAT_INTERVAL = 1.0  # seconds between a worker's heartbeats (at most a quarter of the timeout)
STARTUP_GRACE = 60.0  # a worker not listening yet is given at least this long
APPLY_ALLOWANCE = 300.0  # a worker decoding and applying a config update may be silent this long
RESUME_GAP = 1.0  # a gap this long between the supervisor's 0.2 s checks: it was not running


def is_stuck(now: float, last_beat: float, resumed_at: float, listening: bool, timeout: float) -> bool:
    """Whether a worker whose last heartbeat is `last_beat` (possibly a promise in the future)
    is to be killed at `now`. `resumed_at`: when the supervisor last resumed after not running
    (silence before it is nobody's fault); `timeout` 0 disables the check."""
    if not timeout:
        return False
    if not listening:  # starting: imports and the first config come first
        timeout = max(timeout, STARTUP_GRACE)
    return now - max(last_beat, resumed_at) > timeout


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a spawned worker needs; pickled into the new interpreter."""

    options: ServeOptions
    index: int


def run_worker(spec: WorkerSpec, listening: EventLike, updates: Connection, heartbeat: Heartbeat) -> None:
    """Entry point of a spawned worker process: configs come from the supervisor (`relay`)."""
    configure_logging(spec.options.log_level)
    role = ProcessRole(serve_admin=False, announce=False, worker_index=spec.index)

    def busy(applying: bool) -> None:
        heartbeat.value = time.monotonic() + (APPLY_ALLOWANCE if applying else 0.0)

    source = RelayedSource(updates, on_busy=busy)
    serving = serve_process(source, spec.options, role=role, on_listening=listening.set)
    sys.exit(run_async(with_heartbeat(serving, heartbeat, heartbeat_interval(spec.options))))


class Heartbeat(Protocol):
    """A double in shared memory (`multiprocessing.Value("d", lock=False)`): the worker's last
    `time.monotonic()`, which is one clock for every process on the machine."""

    value: float


def heartbeat_interval(options: ServeOptions) -> float:
    return (
        min(HEARTBEAT_INTERVAL, options.worker_timeout / 4) if options.worker_timeout else HEARTBEAT_INTERVAL
    )


async def with_heartbeat(main: Coroutine[Any, Any, int], heartbeat: Heartbeat, interval: float) -> int:
    """Run `main` while the loop writes the time into `heartbeat` every `interval` seconds: a
    blocked loop stops writing, which is what the supervisor looks for."""

    async def beat() -> None:
        while True:
            heartbeat.value = time.monotonic()
            await asyncio.sleep(interval)

    beating = asyncio.get_running_loop().create_task(beat(), name="heartbeat")
    try:
        return await main
    finally:
        beating.cancel()


class EventLike(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    listening: EventLike
    started: float
    heartbeat: Heartbeat
    killed: bool = False  # for not answering (logged once)


class WorkerGroup:
    """N spawned workers sharing the client port; crashed workers are restarted with backoff."""

    def __init__(self, broadcaster: Broadcaster, options: ServeOptions, metrics_dir: str) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._broadcaster = broadcaster
        self._attaching: set[asyncio.Task[None]] = set()
        self._options = options
        self._metrics_dir = metrics_dir
        self._workers: list[_Worker | None] = [None] * options.workers
        self._failures = [0] * options.workers
        self._last_check = self._resumed_at = time.monotonic()

    def start(self) -> None:
        for index in range(len(self._workers)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        listening = self._ctx.Event()
        spec = WorkerSpec(self._options, index)
        receiving, sending = self._ctx.Pipe(duplex=False)
        heartbeat = self._ctx.Value("d", time.monotonic(), lock=False)  # startup counts as alive
        process = self._ctx.Process(
            target=run_worker, args=(spec, listening, receiving, heartbeat), name=f"routeway-worker-{index}"
        )
        try:
            process.start()
        except BaseException:
            sending.close()
            raise
        finally:
            receiving.close()  # the worker has its copy; ours would keep the pipe open after it dies
        self._workers[index] = _Worker(process, listening, time.monotonic(), heartbeat)
        task = asyncio.get_running_loop().create_task(self._broadcaster.attach(index, sending))
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)

    def not_ready(self) -> str | None:
        up = sum(1 for w in self._workers if w is not None and w.process.is_alive() and w.listening.is_set())
        return None if up == len(self._workers) else f"{up}/{len(self._workers)} workers listening"

    async def keep_running(self, stopping: asyncio.Event) -> None:
        """Restart workers that die while the group is serving (not while it drains)."""
        restart_at: dict[int, float] = {}
        while not stopping.is_set():
            try:
                self._check_workers(restart_at, stopping)
            except Exception:  # a bug here must not leave the group unsupervised
                log.exception("checking workers failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=0.2)

    def _check_workers(self, restart_at: dict[int, float], stopping: asyncio.Event) -> None:
        now = time.monotonic()
        if now - self._last_check > RESUME_GAP:  # we were not running: nor were the workers, maybe
            self._resumed_at = now
        self._last_check = now
        for index, worker in enumerate(self._workers):
            if worker is None:
                if now >= restart_at.get(index, 0.0):
                    restart_at.pop(index, None)
                    self._spawn(index)
                continue
            code = worker.process.exitcode
            if stopping.is_set():
                continue
            if code is None:
                self._kill_if_silent(index, worker, now)
                continue
            pid = worker.process.pid
            self._release(worker)
            self._workers[index] = None
            self._failures[index] = self._failures[index] + 1 if now - worker.started < 10 else 0
            delay = min(30.0, 0.5 * 2 ** self._failures[index])
            restart_at[index] = now + delay
            log.error("worker %d (pid %s) exited with code %s; restarting in %gs", index, pid, code, delay)

    def _kill_if_silent(self, index: int, worker: _Worker, now: float) -> None:
        last_beat = worker.heartbeat.value
        if worker.killed or not is_stuck(
            now, last_beat, self._resumed_at, worker.listening.is_set(), self._options.worker_timeout
        ):
            return
        silent = now - max(last_beat, self._resumed_at)
        worker.killed = True
        log.error(
            "worker %d (pid %s) has not answered for %.0fs (its event loop is blocked); killing it",
            index,
            worker.process.pid,
            silent,
        )
        worker.process.kill()  # its exit is then handled like a crash: restarted with backoff

    def _release(self, worker: _Worker) -> None:
        from prometheus_client import multiprocess

        if worker.process.pid is not None:
            multiprocess.mark_process_dead(worker.process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        with contextlib.suppress(ValueError):  # still running after SIGKILL: leave it to the OS
            worker.process.close()

    def send(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            if worker is not None and worker.process.pid is not None and worker.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, sig)

    async def wait_exit(self, within: float, abort: asyncio.Event) -> bool:
        """Wait for every worker to exit; True when all did with code 0."""
        deadline = time.monotonic() + within
        live = [w for w in self._workers if w is not None]
        while any(w.process.exitcode is None for w in live):
            if abort.is_set() or time.monotonic() > deadline:
                log.warning("workers still running; killing them")
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(abort.wait(), timeout=0.1)
        # -SIGTERM: a worker stopped while still starting, before it could have had a request.
        return all(w.process.exitcode in (0, -signal.SIGTERM) for w in live)

    def kill_remaining(self) -> None:
        for worker in self._workers:
            if worker is None:
                continue
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join(5)
            self._release(worker)


def judged_by(runtime: ProxyRuntime) -> Callable[[ConfigUpdate], ConfigUpdate]:
    """What the workers are sent for an update the supervisor's `runtime` has just been given:
    the update if it serves that config now, else a rejection — a config the supervisor
    refused (the runtime can refuse what parsed) must not become a restarted worker's state."""

    def judge(update: ConfigUpdate) -> ConfigUpdate:
        if not isinstance(update, ConfigLoaded):
            return update
        table, rejection = runtime.table, runtime.last_rejection
        if table is not None and rejection is None and table.revision == update.config.revision:
            return update
        errors = rejection.errors if rejection is not None else ("not applied by the supervisor",)
        return ConfigRejected(update.source, errors)

    return judge


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the client address, then allow SO_REUSEPORT on it.

    Resolves port 0 once for all workers, and keeps the port ours while a worker restarts.
    The bind happens before SO_REUSEPORT is set, so it fails clearly when anything — another
    `routeway` group included — already listens there (two groups starting in the same
    instant can still both pass, as SO_REUSEADDR lets two not-yet-listening sockets share a
    port; it is kept so a restart does not wait out TIME_WAIT). A bound socket that never
    listens receives no connections, so it takes no share of the traffic.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        sock.close()
        raise
    return sock


def make_metrics_dir() -> str:
    """A fresh directory for the workers' metric files (stale files would add old counts).

    /dev/shm first: memory-backed, and writable in containers with a read-only root
    filesystem; then the usual temporary directory.
    """
    error: OSError | None = None
    for base in ("/dev/shm", None):
        try:
            return tempfile.mkdtemp(prefix="routeway-metrics-", dir=base)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


async def supervise(source: ConfigSource, options: ServeOptions) -> int:
    """The supervisor: workers serve clients, this process serves the admin port for all."""
    # Imported before PROMETHEUS_MULTIPROC_DIR is set: only the workers' metrics are summed.
    from prometheus_client import CollectorRegistry

    from routeway_proxy.app import create_admin_app
    from routeway_proxy.metrics import GroupCollector

    signals = StopSignals(ignore_repeats=False)
    signals.install()
    try:
        reserved = reserve_port(options.host, options.port)
    except OSError as exc:
        log.error("cannot listen for clients on %s:%d: %s", options.host, options.port, exc.strerror)
        return 1
    try:
        metrics_dir = make_metrics_dir()
    except OSError as exc:
        reserved.close()
        log.error("cannot create a directory for worker metrics (%s); set TMPDIR to a writable one", exc)
        return 1
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned workers
    # one table of request and token budgets for the group (limits/shared.py), beside the
    # metric files (the collector reads only *.db) and removed with them
    os.environ[TABLE_ENV] = make_table(os.path.join(metrics_dir, "limits.table"))
    options = dataclasses.replace(options, port=reserved.getsockname()[1])
    broadcaster = Broadcaster()
    group = WorkerGroup(broadcaster, options, metrics_dir)
    runtime = ProxyRuntime()

    def group_registry() -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(GroupCollector(metrics_dir))
        return registry

    # the group's counters start with its metrics directory, before any worker runs
    host = SourceHost(runtime, lambda: group_registry().collect())
    attach_source(source, host)
    applier = ConfigApplier(runtime, announce=True)

    # The supervisor is the only reader of the source; workers get what it served (relay.py).
    apply_task = asyncio.create_task(
        applier.run(broadcaster.source(source, judged_by(runtime))), name="apply-config"
    )
    group.start()

    admin_app = create_admin_app(runtime, group_registry, host)
    add_readiness_gate(admin_app, lambda: "draining" if signals.first.is_set() else group.not_ready())
    admin_runner = web.AppRunner(admin_app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_TIMEOUT)
    monitor: asyncio.Task[None] | None = None
    code = 1
    try:
        admin_port = await start_site(admin_runner, admin_address(options), options.admin_port, "admin")
        log.info("%s", describe_listening(options, options.port, admin_port, source))
        monitor = asyncio.create_task(group.keep_running(signals.first), name="workers")
        await signals.first.wait()
        log.info("draining: stopping %d workers, waiting up to %gs", options.workers, options.drain_timeout)
        group.send(signal.SIGTERM)
        # Workers wait drain_timeout for requests, then up to as long again to cancel them.
        clean = await group.wait_exit(2 * options.drain_timeout + 5, abort=signals.second)
        code = 0 if clean else 1
        if clean:
            log.info("drained; exiting")
    except ListenError as exc:
        log.error("%s", exc)
    finally:
        await cancel_tasks(monitor, apply_task)
        group.kill_remaining()
        await broadcaster.close()
        await admin_runner.cleanup()
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
