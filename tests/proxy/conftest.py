"""Fixtures of the proxy tests: the scripted upstream and the gateway, on 127.0.0.1 (see proxy_helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from proxy_helpers import FakeClock, Gateway, Upstream, build_upstream_app, start_site
from routeway_proxy.app import APP_RUNNER_OPTIONS, create_admin_app, create_proxy_app
from routeway_proxy.client_registry import ClientConnections, ConnectionLimits
from routeway_proxy.client_site import start_client_site
from routeway_proxy.runtime import ProxyRuntime


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    runner, url = await start_site(build_upstream_app(state))
    state.url = url
    yield state
    state.stall.set()
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    clock = FakeClock()
    runtime = ProxyRuntime(clock=clock)
    # the client listener the processes use (client_site: timeouts, the cap, half-close), so
    # every proxy test runs through the connection layer, not through a plain TCPSite
    runner = web.AppRunner(create_proxy_app(runtime), **APP_RUNNER_OPTIONS)
    await runner.setup()
    connections = ClientConnections(ConnectionLimits(), runtime.metrics)
    site = await start_client_site(runner, connections, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{site.port}"
    admin_runner, admin_url = await start_site(create_admin_app(runtime))
    yield Gateway(url, admin_url, runtime, clock)
    await runner.cleanup()
    await admin_runner.cleanup()
