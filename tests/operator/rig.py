"""The in-process operator rig: the real `kopf.operator()` against the kmock emulator.

`running_operator` starts kopf as a task in the test's own event loop (not in an async
fixture: kopf cancels tasks created after it started when it exits, which would include
pytest-asyncio's fixture teardown), with a test-only login handler pointing at kmock, waits
until kopf is ready and our startup handler has run, and stops it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import kopf
from kmock_ext import RoutewayEmulator
from routeway_operator.kube import KubeApi
from routeway_operator.main import create_registry
from routeway_operator.proxies import ProxyReader
from routeway_operator.settings import OperatorSettings, PeeringMode
from routeway_operator.state import OperatorState

TEST_SETTINGS = OperatorSettings(
    namespaces=("default",),
    peering=PeeringMode.OFF,
    debounce=0.05,
    liveness_enabled=False,
    resync_interval=3600,
)
WAIT = 15.0  # generous: a loaded CI machine may be slow; nothing asserts on time

ROUTES = "routeway.dev/v1alpha1/modelroutes"
BACKENDS = "routeway.dev/v1alpha1/modelbackends"
GATEWAYS = "routeway.dev/v1alpha1/modelgateways"


@dataclass
class StartedOperator:
    """A kopf operator task started by `start_operator`; `state` is set once it is ready."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    memo: kopf.Memo

    @property
    def state(self) -> OperatorState:
        state: OperatorState = self.memo.routeway
        return state

    async def wait_ready(self, ready: asyncio.Event) -> OperatorState:
        await asyncio.wait_for(ready.wait(), WAIT)
        await eventually(lambda: getattr(self.memo, "routeway", None) is not None)
        return self.state

    async def stop_gracefully(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, WAIT)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """Stop at once, as a killed process would: no stop flag, no cleanup handlers run
        to completion, whatever request is in flight is abandoned."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_operator(
    kmock: RoutewayEmulator,
    settings: OperatorSettings | None = None,
    *,
    proxy_reader: ProxyReader | None = None,
    kopf_settings: Callable[[kopf.OperatorSettings], None] | None = None,
    **overrides: Any,
) -> tuple[StartedOperator, asyncio.Event]:
    """Start the real kopf operator against kmock; returns it and kopf's ready flag.
    `kopf_settings`: a test's change to kopf's settings, made after the operator's own."""
    config = replace(settings or TEST_SETTINGS, **overrides)
    server = str(kmock.url).rstrip("/")
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login_to_kmock(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, insecure=True)

    async def connect() -> KubeApi:
        return await KubeApi.connect(server=server)

    create_registry(config, registry=registry, connect=connect, proxy_reader=proxy_reader)
    if kopf_settings is not None:
        tweak = kopf_settings

        @kopf.on.startup(registry=registry)
        def test_kopf_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
            tweak(settings)  # startup handlers run in order: after configure_kopf

    memo = kopf.Memo()
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            stop_flag=stop,
            ready_flag=ready,
            memo=memo,
        )
    )
    return StartedOperator(task, stop, memo), ready


@contextlib.asynccontextmanager
async def running_operator(
    kmock: RoutewayEmulator,
    settings: OperatorSettings | None = None,
    *,
    proxy_reader: ProxyReader | None = None,
    kopf_settings: Callable[[kopf.OperatorSettings], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[OperatorState]:
    """`proxy_reader`: the stand-in for reading proxy pods' admin ports (default: the real
    HTTP reader, which finds no pod to read unless a test creates Pods)."""
    started, ready = await start_operator(
        kmock, settings, proxy_reader=proxy_reader, kopf_settings=kopf_settings, **overrides
    )
    try:
        yield await started.wait_ready(ready)
    finally:
        await started.stop_gracefully()


async def eventually(check: Callable[[], Any], within: float = WAIT, what: str = "") -> Any:
    """Wait until `check()` is truthy (returns it). A wait, never a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: Exception | None = None
    while loop.time() < deadline:
        try:
            result = check()
            if result:
                return result
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            last_error = exc
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s: {what or check} (last error: {last_error!r})")


async def settled(
    kmock: RoutewayEmulator, state: OperatorState, quiet: float = 0.3, within: float = WAIT
) -> None:
    """Until the reconciler is idle and kmock saw no request for `quiet` seconds of idleness."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        await state.reconciler.wait_idle()
        before = len(list(kmock._requests))
        await asyncio.sleep(quiet)
        if state.reconciler.pending == 0 and len(list(kmock._requests)) == before:
            return
    raise AssertionError("the operator did not settle")


def objects_of(kmock: RoutewayEmulator, resource: str) -> dict[str, Any]:
    return {
        name: obj
        for (res, _ns, name), obj in kmock.objects.items()
        if res == kmock.resource(resource) and not obj.deleted
    }


logging.getLogger("kopf").setLevel(logging.INFO)
