"""Fixtures of the proxy tests: the scripted upstream and the gateway, on 127.0.0.1 (see proxy_helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from proxy_helpers import FakeClock, Gateway, Upstream, build_upstream_app, start_site
from routeway_proxy.app import create_admin_app, create_proxy_app
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
    runner, url = await start_site(create_proxy_app(runtime))
    admin_runner, admin_url = await start_site(create_admin_app(runtime))
    yield Gateway(url, admin_url, runtime, clock)
    await runner.cleanup()
    await admin_runner.cleanup()
