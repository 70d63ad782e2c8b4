"""Where the admin port listens (`--admin-host`, issue 14 item 12): it answers without
authentication (/config, /routes, rollout actions), so it has its own address.

Linux routes all of 127.0.0.0/8 to loopback, so a socket bound to 127.0.0.1 is not reachable at
127.0.0.2 while one bound to 0.0.0.0 is: that tells the bound address apart without a second
network interface.

Matrix: `serve` with `--host 0.0.0.0` (clients on every address, admin on loopback only: the
default); `proxy` by default (both on every address, as a pod needs for Prometheus and the
operator); `proxy --admin-host 127.0.0.1` (admin on loopback only, clients everywhere); the
startup line names the admin address.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from process_rig import Launch, Upstream, manifest

from routeway.local import load_local

OTHER_LOOPBACK = "127.0.0.2"


async def _reachable(host: str, port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            return r.status in (200, 404)  # the admin app answers 200, the client port 404
    except aiohttp.ClientConnectorError:
        return False


def _manifests(tmp_path: Path, upstream: Upstream) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(manifest(upstream.url))
    return path


async def test_serve_keeps_admin_on_loopback_when_clients_listen_everywhere(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    routeway = await launch("serve", "-f", str(_manifests(tmp_path, upstream)), "--host", "0.0.0.0")
    assert await _reachable(OTHER_LOOPBACK, routeway.port)
    assert not await _reachable(OTHER_LOOPBACK, routeway.admin_port)
    assert f"(admin on http://127.0.0.1:{routeway.admin_port})" in routeway.log()


@pytest.mark.parametrize(
    ("admin_host", "admin_everywhere"), [(None, True), ("127.0.0.1", False)], ids=["default", "loopback"]
)
async def test_proxy_admin_host(
    tmp_path: Path, launch: Launch, upstream: Upstream, admin_host: str | None, admin_everywhere: bool
) -> None:
    rendered = load_local([str(_manifests(tmp_path, upstream))])
    assert rendered.config is not None
    config = tmp_path / "config.json"
    config.write_bytes(rendered.config.to_json())
    flags = ["--admin-host", admin_host] if admin_host else []
    routeway = await launch("proxy", "--config", str(config), *flags)
    assert await _reachable(OTHER_LOOPBACK, routeway.port)
    assert await _reachable(OTHER_LOOPBACK, routeway.admin_port) == admin_everywhere
    shown = admin_host or "0.0.0.0"
    assert f"(admin on http://{shown}:{routeway.admin_port})" in routeway.log()
