"""Pure builders of the Kubernetes objects that run one ModelGateway.

Each function returns the *desired* object as a plain dict; apply.py compares and writes it.
Keeping them pure means every field can be tested without an API server, and a reviewer can
read what the operator will create in one place (as crate-operator's `get_statefulset`).

Naming: every child is `routeway-<gateway>` (+ `-config`, `-credentials`); names longer than a
DNS label are shortened with a hash so two long gateway names never collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeway.configstore import REVISION_ANNOTATION, SHARD_KEY, config_object_names, encode_credentials
from routeway.resources import API_VERSION, GROUP, ConnectionsSpec, ModelGateway
from routeway_operator.settings import OperatorSettings

MANAGED_BY = "routeway"
GATEWAY_LABEL = f"{GROUP}/gateway"
COMPONENT_LABEL = "app.kubernetes.io/component"
PROXY_PORT = 8080
ADMIN_PORT = 9090
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(ADMIN_PORT),
    "prometheus.io/path": "/metrics",
}
"""On the proxy pods, for Prometheus's common `kubernetes-pods` scrape job (a PodMonitor selects
them by label instead): their metrics are on the admin port, which the Service does not expose."""
MAX_NAME = 63


def _short(name: str, limit: int = MAX_NAME) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class ChildNames:
    """Names of everything a gateway owns, derived from the gateway's name alone."""

    workload: str  # Deployment, Service, ServiceAccount, Role, RoleBinding, PDB
    configmap: str
    secret: str

    @classmethod
    def of(cls, gateway_name: str) -> ChildNames:
        base = _short(f"routeway-{gateway_name}", MAX_NAME - len("-credentials"))
        return cls(workload=base, configmap=f"{base}-config", secret=f"{base}-credentials")


def selector_labels(gateway: ModelGateway) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "routeway-proxy",
        "app.kubernetes.io/instance": _short(gateway.name),
    }


def common_labels(gateway: ModelGateway) -> dict[str, str]:
    return {
        **selector_labels(gateway),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        COMPONENT_LABEL: "proxy",
        GATEWAY_LABEL: _short(gateway.name),
    }


def owner_reference(gateway: ModelGateway) -> dict[str, Any]:
    """The gateway owns every child: deleting it lets the garbage collector remove them."""
    return {
        "apiVersion": API_VERSION,
        "kind": ModelGateway.KIND,
        "name": gateway.name,
        "uid": gateway.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(gateway: ModelGateway, name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": gateway.namespace,
        "labels": common_labels(gateway),
        "ownerReferences": [owner_reference(gateway)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def build_service_account(gateway: ModelGateway) -> dict[str, Any]:
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(gateway, names.workload),
        "automountServiceAccountToken": True,
    }


def build_role(gateway: ModelGateway) -> dict[str, Any]:
    """Read access to this gateway's own config objects only (resourceNames), nothing else."""
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(gateway, names.workload),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": config_object_names(names.configmap),
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [names.secret],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }


def build_role_binding(gateway: ModelGateway) -> dict[str, Any]:
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(gateway, names.workload),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.workload},
        "subjects": [{"kind": "ServiceAccount", "name": names.workload, "namespace": gateway.namespace}],
    }


def proxy_args(gateway: ModelGateway) -> list[str]:
    """`routeway proxy` in its in-cluster mode: it watches its ConfigMap and Secret itself."""
    names = ChildNames.of(gateway.name)
    args = [
        "proxy",
        "--configmap",
        names.configmap,
        "--secret",
        names.secret,
        "--namespace",
        gateway.namespace,
        "--port",
        str(PROXY_PORT),
        "--admin-port",
        str(ADMIN_PORT),
    ]
    if gateway.spec.workers is not None:
        args += ["--workers", str(gateway.spec.workers)]
    if gateway.spec.access_log:
        args.append("--access-log")
    return args + connection_args(gateway.spec.connections)


def connection_args(connections: ConnectionsSpec) -> list[str]:
    """`spec.connections` as `routeway proxy` flags; a default is left to the proxy's own."""
    defaults = ConnectionsSpec()
    args: list[str] = []
    for flag, value, default in (
        ("--header-timeout", connections.header_timeout, defaults.header_timeout),
        ("--body-timeout", connections.body_timeout, defaults.body_timeout),
        ("--idle-timeout", connections.idle_timeout, defaults.idle_timeout),
        ("--max-connections", str(connections.max_per_worker), str(defaults.max_per_worker)),
    ):
        if value != default:
            args += [flag, value]
    return args


def build_deployment(gateway: ModelGateway, settings: OperatorSettings) -> dict[str, Any]:
    names = ChildNames.of(gateway.name)
    spec = gateway.spec
    resources: dict[str, Any] = {}
    if spec.resources.requests:
        resources["requests"] = dict(spec.resources.requests)
    if spec.resources.limits:
        resources["limits"] = dict(spec.resources.limits)
    container: dict[str, Any] = {
        "name": "proxy",
        "image": spec.image or settings.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "args": proxy_args(gateway),
        "ports": [
            {"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": resources,
        # The root filesystem is read-only; the proxy's workers keep their metrics files in
        # a temporary directory (prometheus-client multiprocess mode).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(gateway, names.workload),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(gateway)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": common_labels(gateway), "annotations": dict(SCRAPE_ANNOTATIONS)},
                "spec": {
                    "serviceAccountName": names.workload,
                    "automountServiceAccountToken": True,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 45,  # the proxy drains streams for 30 s
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def build_service(gateway: ModelGateway) -> dict[str, Any]:
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(gateway, names.workload),
        "spec": {
            "type": gateway.spec.service.type,
            "selector": selector_labels(gateway),
            "ports": [
                {"name": "http", "port": gateway.spec.service.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_pdb(gateway: ModelGateway) -> dict[str, Any]:
    """At most one proxy pod down at a time in voluntary disruptions (node drains)."""
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(gateway, names.workload),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(gateway)}},
    }


def build_config_map(
    gateway: ModelGateway, revision: str, data: Mapping[str, str], *, name: str | None = None
) -> dict[str, Any]:
    """The gateway's config ConfigMap: inline `config.json` or the shard manifest."""
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(gateway, name or names.configmap, {REVISION_ANNOTATION: revision}),
        "data": dict(data),
    }


def build_shard(gateway: ModelGateway, revision: str, name: str, binary: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(gateway, name, {REVISION_ANNOTATION: revision}),
        "binaryData": {SHARD_KEY: binary[SHARD_KEY]},
    }


def build_secret(gateway: ModelGateway, credentials: Mapping[str, str]) -> dict[str, Any]:
    """Resolved upstream credentials keyed by credential store key; never in a ConfigMap."""
    names = ChildNames.of(gateway.name)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(gateway, names.secret),
        "data": encode_credentials(credentials),
    }


def build_workload(gateway: ModelGateway, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Everything but the config objects, in creation order (identity before the pods)."""
    return [
        build_service_account(gateway),
        build_role(gateway),
        build_role_binding(gateway),
        build_service(gateway),
        build_pdb(gateway),
        build_deployment(gateway, settings),
    ]


def gateway_address(gateway: ModelGateway) -> str:
    """In-cluster URL of the gateway's OpenAI-compatible API."""
    names = ChildNames.of(gateway.name)
    port = gateway.spec.service.port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{names.workload}.{gateway.namespace}.svc{suffix}/v1"
