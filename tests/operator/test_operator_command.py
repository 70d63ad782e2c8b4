"""`routeway operator`'s production wiring runs: kopf's default logins read a kubeconfig (as
in a developer's shell), the API client connects the same way, settings come from the
environment, and a gateway gets its ConfigMap; liveness and Prometheus metrics answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import pytest
import yaml
from kmock_ext import RoutewayEmulator
from operator_factories import backend, gateway, get, route, seed
from rig import eventually
from routeway_operator.commands import run_operator
from routeway_operator.settings import OperatorSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_operator_command_with_a_kubeconfig(
    kmock: RoutewayEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes_asyncio.config import kube_config

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "dev", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "dev"}}],
                "current-context": "kmock",
            }
        )
    )
    # kubernetes_asyncio reads KUBECONFIG once, at import: point its default at our file.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    port, metrics_port = free_port(), free_port()
    monkeypatch.setenv("ROUTEWAY_METRICS_PORT", str(metrics_port))
    monkeypatch.setenv("ROUTEWAY_NAMESPACES", "default")
    monkeypatch.setenv("ROUTEWAY_LIVENESS_PORT", str(port))
    monkeypatch.setenv("ROUTEWAY_PROXY_IMAGE", "example/routeway:test")
    settings = OperatorSettings.from_env().apply_overrides(standalone=True)

    seed(kmock, gateway("gw"), backend("m"), route("chat", "chat", {"m": 1}))
    stop = asyncio.Event()
    task = asyncio.create_task(run_operator(settings, stop_flag=stop))
    try:
        await eventually(lambda: get(kmock, "v1/configmaps", "routeway-gw-config"), what="ConfigMap")
        dep = get(kmock, "apps/v1/deployments", "routeway-gw")
        assert (
            dep is None
            or dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example/routeway:test"
        )
        await eventually(lambda: get(kmock, "apps/v1/deployments", "routeway-gw"), what="Deployment")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        assert any(r.headers.get("Authorization") == "Bearer t0ken" for r in kmock.writes())
        # The Deployment is written before the statuses: the reconcile may still be running.
        wanted = 'routeway_operator_reconciles_total{kind="ModelGateway",result="ok"}'
        text = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while wanted not in text and loop.time() < deadline:
            await asyncio.sleep(0.05)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp,
            ):
                text = await resp.text()
        assert wanted in text, text
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
