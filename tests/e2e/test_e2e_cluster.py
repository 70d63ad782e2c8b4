"""End to end on a real cluster (kind or k3d): what kmock cannot prove.

Runs only when ROUTEWAY_E2E_KUBECONFIG names a kubeconfig (skipped otherwise). It applies the
CRDs from crds/, runs the operator in this process against the cluster, applies a gateway,
a mock backend and a route in a fresh namespace, waits for `Ready` (real pods, real probes),
calls the gateway through `kubectl port-forward`, changes the route and calls again (the pods
must not restart: the config arrives through the API), then deletes the gateway and waits for
the garbage collector to remove its children.

Needs: the proxy image loaded into the cluster (ROUTEWAY_E2E_IMAGE, default routeway:dev;
`docker build -t routeway:dev . && kind load docker-image routeway:dev`) and kubectl on PATH
or in tools/bin (scripts/fetch-tools).

What only this test checks: RBAC of the proxy's Role (resourceNames with list/watch through a
field selector), server-side defaulting, pruning and CEL validation of the CRDs, the status
subresource, owner-reference garbage collection, resourceVersion conflicts between the
operator's writers, and the image, entrypoint and probes of the proxy pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import yaml
from routeway_operator.kube import ApiError, KubeApi, path_for
from routeway_operator.main import create_registry
from routeway_operator.settings import OperatorSettings, PeeringMode

KUBECONFIG = os.environ.get("ROUTEWAY_E2E_KUBECONFIG", "")
IMAGE = os.environ.get("ROUTEWAY_E2E_IMAGE", "routeway:dev")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = float(os.environ.get("ROUTEWAY_E2E_TIMEOUT", "240"))
API = "routeway.dev/v1alpha1"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="set ROUTEWAY_E2E_KUBECONFIG to run against a real cluster"),
]


def kubectl() -> str:
    found = shutil.which("kubectl") or (
        str(ROOT / "tools/bin/kubectl") if (ROOT / "tools/bin/kubectl").exists() else None
    )
    if found is None:
        pytest.fail("kubectl is needed for the port-forward (PATH or tools/bin, see scripts/fetch-tools)")
    return found


async def wait_for(check: Callable[[], Any], what: str, within: float = TIMEOUT) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(1)
    pytest.fail(f"timed out after {within}s waiting for {what}")


async def apply_crds(api: KubeApi) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            try:
                await api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                name = crd["metadata"]["name"]
                await api.patch(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", {"spec": crd["spec"]}
                )

            async def established(name: str = crd["metadata"]["name"]) -> bool:
                doc = await api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conds = ((doc or {}).get("status") or {}).get("conditions") or []
                return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

            await wait_for(established, f"CRD {crd['metadata']['name']} established", 60)


@contextlib.asynccontextmanager
async def operator_running(namespace: str) -> AsyncIterator[None]:
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio import config as k8s_config

    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        token = str((configuration.api_key or {}).get("BearerToken") or "")  # "Bearer <token>"
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
            scheme="Bearer" if token else None,
            token=token.removeprefix("Bearer ") or None,
            insecure=not configuration.verify_ssl,
        )

    async def connect() -> KubeApi:
        return await KubeApi.connect(config_file=KUBECONFIG)

    settings = OperatorSettings(
        namespaces=(namespace,), proxy_image=IMAGE, peering=PeeringMode.OFF, debounce=0.2
    )
    create_registry(settings, registry=registry, connect=connect)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry, namespaces=[namespace], standalone=True, stop_flag=stop, ready_flag=ready
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def port_forward(namespace: str, service: str, port: int) -> AsyncIterator[str]:
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        kubectl(),
        "--kubeconfig",
        KUBECONFIG,
        "-n",
        namespace,
        "port-forward",
        f"svc/{service}",
        f"{local}:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def chat(base: str, model: str) -> int:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp,
        ):
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def pod_names(doc: dict[str, Any] | None) -> list[str]:
    return sorted(p["metadata"]["name"] for p in (doc or {}).get("items") or [])


def ready(doc: dict[str, Any] | None, generation: int | None = None) -> bool:
    for cond in ((doc or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"] == "True" and (
                generation is None or cond["observedGeneration"] == generation
            )
    return False


async def test_gateway_serves_through_a_port_forward_and_follows_route_changes() -> None:
    api = await KubeApi.connect(config_file=KUBECONFIG)
    namespace = f"routeway-e2e-{uuid.uuid4().hex[:6]}"
    try:
        await apply_crds(api)
        await api.create(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        async with operator_running(namespace):
            objs = [
                {
                    "apiVersion": API,
                    "kind": "ModelGateway",
                    "metadata": {"name": "gw"},
                    "spec": {"replicas": 1},
                },
                {
                    "apiVersion": API,
                    "kind": "ModelBackend",
                    "metadata": {"name": "mock"},
                    "spec": {"provider": "mock"},
                },
                {
                    "apiVersion": API,
                    "kind": "ModelRoute",
                    "metadata": {"name": "chat"},
                    "spec": {"model": "chat", "gatewayRef": {"name": "gw"}, "backends": [{"name": "mock"}]},
                },
            ]
            plurals = {
                "ModelGateway": "modelgateways",
                "ModelBackend": "modelbackends",
                "ModelRoute": "modelroutes",
            }
            for obj in objs:
                await api.create(path_for(API, plurals[obj["kind"]], namespace), obj)

            route_path = path_for(API, "modelroutes", namespace, "chat")
            gw_path = path_for(API, "modelgateways", namespace, "gw")

            async def route_ready(generation: int = 1) -> bool:
                return ready(await api.get(route_path), generation)

            async def gateway_ready() -> bool:
                return ready(await api.get(gw_path))

            await wait_for(route_ready, "route Ready")
            await wait_for(gateway_ready, "gateway Ready (proxy pods ready)")
            pods_before = await api.get(
                path_for("v1", "pods", namespace), params={"labelSelector": "app.kubernetes.io/instance=gw"}
            )

            async with port_forward(namespace, "routeway-gw", 80) as base:

                async def serves(model: str) -> bool:
                    return await chat(base, model) == 200

                await wait_for(lambda: serves("chat"), "a chat completion through the port-forward", 60)
                await api.patch(route_path, {"spec": {"model": "chat-v2"}})
                await wait_for(lambda: route_ready(2), "route generation 2 Ready")
                await wait_for(lambda: serves("chat-v2"), "the changed route served", 30)
                assert await chat(base, "chat") == 404

            pods_after = await api.get(
                path_for("v1", "pods", namespace), params={"labelSelector": "app.kubernetes.io/instance=gw"}
            )
            assert pod_names(pods_after) == pod_names(
                pods_before
            )  # no restart: the config came through the API
            for pod in (pods_after or {}).get("items") or []:
                assert all(c["restartCount"] == 0 for c in pod["status"]["containerStatuses"])

            await api.delete(gw_path)

            async def children_gone() -> bool:
                return await api.get(path_for("apps/v1", "deployments", namespace, "routeway-gw")) is None

            await wait_for(children_gone, "garbage collection of the gateway's Deployment", 120)

            async def detached() -> bool:
                conds = ((await api.get(route_path) or {}).get("status") or {}).get("conditions") or []
                return any(c["type"] == "Accepted" and c["reason"] == "GatewayNotFound" for c in conds)

            await wait_for(detached, "the route to report GatewayNotFound", 60)
    finally:
        with contextlib.suppress(ApiError):
            await api.delete(f"/api/v1/namespaces/{namespace}")
        await api.close()
