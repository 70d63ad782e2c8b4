"""Manifests and API helpers for the operator tests (kmock paths, object bodies)."""

from __future__ import annotations

import base64
import json
from typing import Any

from kmock_ext import RoutewayEmulator

API = "/apis/routeway.dev/v1alpha1/namespaces"


def gateway(name: str = "gw", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelGateway",
        "metadata": {"name": name},
        "spec": {"replicas": 2, **spec},
    }


def backend(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelBackend",
        "metadata": {"name": name},
        "spec": {"provider": "mock", **spec} if "url" not in spec else {"provider": "openai", **spec},
    }


def route(name: str, model: str, backends: dict[str, int], gw: str = "gw", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "gatewayRef": {"name": gw},
            "backends": [{"name": b, "weight": w} for b, w in backends.items()],
            **spec,
        },
    }


def client(name: str, key_secret: str, key: str = "api-key", gw: str = "gw", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelClient",
        "metadata": {"name": name},
        "spec": {"gatewayRef": {"name": gw}, "keySecretRef": {"name": key_secret, "key": key}, **spec},
    }


def secret(name: str, **values: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


PLURALS = {
    "ModelGateway": "modelgateways",
    "ModelBackend": "modelbackends",
    "ModelRoute": "modelroutes",
    "ModelClient": "modelclients",
}


def collection(obj: dict[str, Any], namespace: str = "default") -> str:
    if obj["kind"] == "Secret":
        return f"/api/v1/namespaces/{namespace}/secrets"
    return f"{API}/{namespace}/{PLURALS[obj['kind']]}"


async def create(kmock: RoutewayEmulator, *objs: dict[str, Any], namespace: str = "default") -> None:
    for obj in objs:
        resp = await kmock.post(collection(obj, namespace), json=obj)
        assert resp.status == 200, await resp.text()


async def patch(
    kmock: RoutewayEmulator, kind: str, name: str, body: dict[str, Any], namespace: str = "default"
) -> None:
    resp = await kmock.patch(f"{API}/{namespace}/{PLURALS[kind]}/{name}", json=body)
    assert resp.status == 200, await resp.text()


async def delete(kmock: RoutewayEmulator, kind: str, name: str, namespace: str = "default") -> None:
    resp = await kmock.delete(f"{API}/{namespace}/{PLURALS[kind]}/{name}")
    assert resp.status == 200, await resp.text()


def seed(kmock: RoutewayEmulator, *objs: dict[str, Any], namespace: str = "default") -> None:
    for obj in objs:
        if obj["kind"] == "Secret":
            kmock.seed("v1/secrets", namespace, obj)
        else:
            kmock.seed(f"routeway.dev/v1alpha1/{PLURALS[obj['kind']]}", namespace, obj)


def get(kmock: RoutewayEmulator, resource: str, name: str, namespace: str = "default") -> Any:
    try:
        obj = kmock.objects[resource, namespace, name]
    except KeyError:
        return None
    return None if obj.deleted else obj.raw


def config_of(kmock: RoutewayEmulator, gw: str = "gw") -> dict[str, Any]:
    cm = get(kmock, "v1/configmaps", f"routeway-{gw}-config")
    return json.loads(cm["data"]["config.json"])


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return None


def is_true(obj: dict[str, Any] | None, ctype: str) -> bool:
    cond = condition(obj, ctype)
    return cond is not None and cond["status"] == "True"
