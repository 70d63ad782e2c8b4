"""`routeway proxy` in its in-cluster mode follows the operator's ConfigMap through the API.

Matrix: inline and sharded configs x a route change served before and after (a real
ProxyRuntime and proxy app on loopback, the real operator, the same kmock) / a 10,000-route
gateway stored within the object size limit and read back identically / the source survives
API errors, ignores other ConfigMaps, follows a Secret that appears later, rejects a broken or
deleted ConfigMap. The storage format itself (round trips, torn shard sets, bad manifests) is
tested without an API server in tests/core/test_core_configstore.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from kmock_ext import RoutewayEmulator
from operator_factories import backend, create, gateway, get, patch, route, seed
from rig import ROUTES, eventually, running_operator
from routeway_operator import builders
from routeway_operator.apply import Applier
from routeway_operator.kube import KubeApi
from routeway_proxy.app import create_proxy_app
from routeway_proxy.config_apply import ConfigApplier
from routeway_proxy.kube_source import KubeConfigSource
from routeway_proxy.runtime import ProxyRuntime

from routeway.configstore import MAX_SHARDS, encode_config
from routeway.configupdate import ConfigLoaded, ConfigRejected
from routeway.render import render
from routeway.resources import ModelBackend, ModelGateway, ModelRoute
from routeway.translate import Inventory, translate


@contextlib.asynccontextmanager
async def in_cluster_proxy(kmock: RoutewayEmulator) -> AsyncIterator[tuple[ProxyRuntime, str]]:
    runtime = ProxyRuntime()
    source = KubeConfigSource(
        namespace="default",
        configmap="routeway-gw-config",
        secret="routeway-gw-credentials",
        server=str(kmock.url),
    )
    applier = ConfigApplier(runtime, announce=False)
    follow = asyncio.create_task(applier.run(source))
    server = TestServer(create_proxy_app(runtime))
    await server.start_server()
    try:
        yield runtime, str(server.make_url("/"))
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await server.close()


async def ask(url: str, model: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp,
    ):
        await resp.read()
        return resp.status


def cm_revision(kmock: RoutewayEmulator) -> str | None:
    cm = get(kmock, "v1/configmaps", "routeway-gw-config")
    return cm["metadata"]["annotations"]["routeway.dev/config-revision"] if cm else None


@pytest.mark.parametrize("budget", [900 * 1024, 300], ids=["inline", "sharded"])
async def test_proxy_follows_configmap_changes(kmock: RoutewayEmulator, budget: int) -> None:
    seed(kmock, gateway("gw"), backend("m1"), route("chat", "chat", {"m1": 1}))
    async with running_operator(kmock, configmap_budget=budget) as _state:
        await eventually(lambda: (get(kmock, ROUTES, "chat").get("status") or {}).get("configRevision"))
        async with in_cluster_proxy(kmock) as (runtime, url):
            await eventually(lambda: runtime.config and runtime.config.revision == cm_revision(kmock))
            assert await ask(url, "chat") == 200
            assert await ask(url, "chat-v2") == 404

            await patch(kmock, "ModelRoute", "chat", {"spec": {"model": "chat-v2"}})
            await create(kmock, route("other", "other", {"m1": 1}))
            await eventually(
                lambda: (
                    runtime.config
                    and len(runtime.config.routes) == 2
                    and runtime.config.revision == cm_revision(kmock)
                ),
                what="proxy serves the new revision",
            )
            assert await ask(url, "chat-v2") == 200
            assert await ask(url, "other") == 200
            assert await ask(url, "chat") == 404
    if budget == 300:
        assert "manifest.json" in get(kmock, "v1/configmaps", "routeway-gw-config")["data"]


def big_inventory(routes: int) -> Inventory:
    gw = ModelGateway.model_validate({"metadata": {"name": "gw", "uid": "u-1"}, "spec": {}})
    backends = {
        ("default", f"b{i}"): ModelBackend.model_validate(
            {
                "metadata": {"name": f"b{i}"},
                "spec": {"provider": "openai", "url": f"http://vllm-{i}.ml.svc:8000/v1"},
            }
        )
        for i in range(50)
    }
    objs = {
        ("default", f"r{i:05d}"): ModelRoute.model_validate(
            {
                "metadata": {"name": f"r{i:05d}", "generation": 1},
                "spec": {
                    "model": f"org-{i % 97}/model-{i:05d}",
                    "gatewayRef": {"name": "gw"},
                    "backends": [
                        {"name": f"b{i % 50}", "weight": 90},
                        {"name": f"b{(i + 1) % 50}", "weight": 10},
                    ],
                },
            }
        )
        for i in range(routes)
    }
    return Inventory(backends=backends, routes=objs, gateways={("default", "gw"): gw})


async def test_ten_thousand_routes_fit_and_read_back(kmock: RoutewayEmulator) -> None:
    config = render(translate(big_inventory(10_000)).gateways[("default", "gw")])
    body = config.to_json()
    assert len(body) > 900 * 1024  # far over one object's limit uncompressed
    names = builders.ChildNames.of("gw")
    encoded = encode_config(body, config.revision, names.configmap)
    assert 1 <= len(encoded.shards) <= MAX_SHARDS
    gw = ModelGateway.model_validate({"metadata": {"name": "gw", "uid": "u-1"}, "spec": {}})
    objects = [builders.build_shard(gw, config.revision, n, b) for n, b in encoded.shards]
    objects.append(builders.build_config_map(gw, config.revision, encoded.data))
    for obj in objects:
        assert len(json.dumps(obj)) < 1024 * 1024  # each object within the API server's limit

    api = await KubeApi.connect(server=str(kmock.url))
    try:
        applier = Applier(api)
        for obj in objects:
            assert await applier.apply(obj)
        fresh = Applier(api)  # a restarted operator: reads, finds equal hashes, writes nothing
        assert not any([await fresh.apply(obj) for obj in objects])
    finally:
        await api.close()

    source = KubeConfigSource(namespace="default", configmap=names.configmap, server=str(kmock.url))
    updates = source.watch()
    try:
        first = await asyncio.wait_for(updates.__anext__(), 30)
    finally:
        await updates.aclose()
    assert isinstance(first, ConfigLoaded)
    assert first.config == config and len(first.config.routes) == 10_000


def configmap_body(name: str, config_json: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"config.json": config_json},
    }


async def test_source_survives_api_errors_and_follows_secret_and_deletion(kmock: RoutewayEmulator) -> None:
    config = render(translate(big_inventory(2)).gateways[("default", "gw")])
    kmock.inject_failure("GET", "/configmaps", 500, times=1)  # the first list fails: retried
    await kmock.post("/api/v1/namespaces/default/configmaps", json=configmap_body("other", "{}"))
    await kmock.post(
        "/api/v1/namespaces/default/configmaps", json=configmap_body("cm", config.to_json().decode())
    )
    source = KubeConfigSource("default", "cm", "creds", server=str(kmock.url))
    updates = source.watch()
    try:
        first = await asyncio.wait_for(updates.__anext__(), 15)
        assert isinstance(first, ConfigLoaded) and first.config == config and first.credentials == {}

        secret = {"metadata": {"name": "creds"}, "data": {"default_openai_token": "c2stMQ=="}}
        await kmock.post("/api/v1/namespaces/default/secrets", json=secret)
        second = await asyncio.wait_for(updates.__anext__(), 15)
        assert isinstance(second, ConfigLoaded) and second.credentials == {"default/openai/token": "sk-1"}

        await kmock.patch("/api/v1/namespaces/default/configmaps/other", json={"data": {"x": "y"}})
        await kmock.patch(
            "/api/v1/namespaces/default/configmaps/cm", json={"data": {"config.json": "{not json"}}
        )
        third = await asyncio.wait_for(updates.__anext__(), 15)
        assert isinstance(third, ConfigRejected)  # the last good config keeps serving

        await kmock.delete("/api/v1/namespaces/default/configmaps/cm")
        fourth = await asyncio.wait_for(updates.__anext__(), 15)
        assert isinstance(fourth, ConfigRejected) and "not found" in fourth.errors[0]
    finally:
        await updates.aclose()
