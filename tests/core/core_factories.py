"""Small builders for resources in tests: defaults that make a valid object, overrides by kwarg."""

from __future__ import annotations

from typing import Any

from routeway.resources import ModelBackend, ModelClient, ModelGateway, ModelRoute, Secret


def backend(name: str, namespace: str = "default", **spec: Any) -> ModelBackend:
    body: dict[str, Any] = {"provider": "openai", "url": f"http://{name}.ml.svc:8000/v1"}
    body.update(spec)
    return ModelBackend.model_validate(
        {
            "apiVersion": "routeway.dev/v1alpha1",
            "kind": "ModelBackend",
            "metadata": {"name": name, "namespace": namespace},
            "spec": body,
        }
    )


def route(
    name: str,
    backends: list[tuple[str, int]] | None = None,
    namespace: str = "default",
    created: str | None = None,
    **spec: Any,
) -> ModelRoute:
    body: dict[str, Any] = {
        "model": spec.pop("model", name),
        "backends": [{"name": b, "weight": w} for b, w in (backends or [("a", 1)])],
    }
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "generation": 1}
    if created:
        meta["creationTimestamp"] = created
    return ModelRoute.model_validate(
        {"apiVersion": "routeway.dev/v1alpha1", "kind": "ModelRoute", "metadata": meta, "spec": body}
    )


def gateway(name: str = "default", namespace: str = "default", **spec: Any) -> ModelGateway:
    return ModelGateway.model_validate(
        {
            "apiVersion": "routeway.dev/v1alpha1",
            "kind": "ModelGateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def secret(name: str, namespace: str = "default", **string_data: str) -> Secret:
    return Secret.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": string_data,
        }
    )


def client(name: str, namespace: str = "default", **spec: Any) -> ModelClient:
    body: dict[str, Any] = {"keySecretRef": {"name": f"{name}-key", "key": "api-key"}}
    body.update(spec)
    return ModelClient.model_validate(
        {
            "apiVersion": "routeway.dev/v1alpha1",
            "kind": "ModelClient",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": body,
        }
    )
