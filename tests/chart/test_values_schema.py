"""values.schema.json makes helm refuse wrong values instead of rendering something surprising.

Each case is one wrong value and a fragment helm's error must contain (the offending key in
Helm 4's wording, the version scripts/fetch-tools pins), so a case cannot pass for an unrelated
reason. Cross-field rules the schema cannot express
(ServiceMonitor without metrics, one port for two purposes, a default gateway the operator would
not serve, route namespace names without `from: List`) fail from the templates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, Helm, helm_template

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "negative-replicas": ({"replicas": -1}, "'/replicas'"),
    "replicas-as-string": ({"replicas": "2"}, "'/replicas'"),
    "unknown-top-level-key": ({"replicaCount": 2}, "'replicaCount' not allowed"),
    "unknown-nested-key": (
        {"image": {"repository": "routeway", "pullPolicy": "Always", "digest": "x"}},
        "'digest' not allowed",
    ),
    "unknown-log-level": ({"logLevel": "loud"}, "'/logLevel'"),
    "bad-pull-policy": (
        {"image": {"repository": "routeway", "pullPolicy": "Sometimes"}},
        "'/image/pullPolicy'",
    ),
    "namespace-not-dns-label": ({"watchNamespaces": ["Team_A"]}, "'/watchNamespaces/0'"),
    "duplicate-namespace": ({"watchNamespaces": ["a", "a"]}, "'/watchNamespaces'"),
    "namespaces-as-string": ({"watchNamespaces": "team-a,team-b"}, "'/watchNamespaces'"),
    "resync-as-duration": ({"resyncInterval": "5m"}, "'/resyncInterval'"),
    "resync-too-short": ({"resyncInterval": 1}, "'/resyncInterval'"),
    "privileged-container": ({"securityContext": {"privileged": True}}, "'privileged' not allowed"),
    "added-capability": ({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "'add' not allowed"),
    "unconfined-seccomp": (
        {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "'/podSecurityContext/seccompProfile/type'",
    ),
    "port-out-of-range": ({"metrics": {"enabled": True, "port": 70000}}, "'/metrics/port'"),
    "bad-scrape-interval": (
        {"serviceMonitor": {"enabled": True, "interval": "often"}},
        "'/serviceMonitor/interval'",
    ),
    "toleration-typo": ({"tolerations": [{"key": "a", "operater": "Exists"}]}, "'operater' not allowed"),
    "monitor-without-metrics": (
        {"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False, "port": 9090}},
        "serviceMonitor.enabled needs metrics.enabled",
    ),
    "same-port-twice": ({"health": {"port": 9090}}, "health.port and metrics.port must differ"),
    "service-account-without-name": (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required",
    ),
    "dashboard-label-not-a-key": (
        {"grafanaDashboard": {"enabled": True, "sidecarLabel": "not a key"}},
        "'/grafanaDashboard/sidecarLabel'",
    ),
    "dashboard-unknown-key": ({"grafanaDashboard": {"enabled": True, "label": "x"}}, "'label' not allowed"),
    "dashboard-enabled-as-string": ({"grafanaDashboard": {"enabled": "true"}}, "'/grafanaDashboard/enabled'"),
    "gateway-service-type": (
        {"defaultGateway": {"enabled": True, "service": {"type": "Ingress"}}},
        "'/defaultGateway/service/type'",
    ),
    "gateway-too-many-replicas": (
        {"defaultGateway": {"enabled": True, "replicas": 1001}},
        "'/defaultGateway/replicas'",
    ),
    "gateway-field-not-passed-through": (
        {"defaultGateway": {"enabled": True, "maxRequestBodyBytes": 1024}},
        "'maxRequestBodyBytes' not allowed",
    ),
    "gateway-auth-without-secret-name": (
        {"defaultGateway": {"enabled": True, "auth": {"apiKeySecretRef": {}}}},
        "'/defaultGateway/auth/apiKeySecretRef'",
    ),
    "gateway-outside-watched-namespaces": (
        {"watchNamespaces": ["team-a"], "defaultGateway": {"enabled": True}},
        "is not in watchNamespaces",
    ),
    "gateway-names-without-list": (
        {"defaultGateway": {"enabled": True, "allowedRoutes": {"namespaces": {"names": ["team-a"]}}}},
        "names is only used when from is List",
    ),
    "policy-cidr-without-prefix": (
        {"networkPolicy": {"enabled": True, "api": {"ipBlocks": [{"cidr": "10.0.0.0"}]}}},
        "'/networkPolicy/api/ipBlocks/0/cidr'",
    ),
    "policy-selector-typo": (
        {"networkPolicy": {"enabled": True, "api": {"namespaceSelector": {"matchLabel": {}}}}},
        "'matchLabel' not allowed",
    ),
    "policy-selector-operator": (
        {
            "networkPolicy": {
                "enabled": True,
                "api": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}},
            }
        },
        "'/networkPolicy/api/podSelector/matchExpressions/0/operator'",
    ),
    "policy-prometheus-as-map": (
        {"networkPolicy": {"enabled": True, "prometheus": {"namespaceSelector": {}}}},
        "'/networkPolicy/prometheus'",
    ),
    "policy-empty-peer": (
        {"networkPolicy": {"enabled": True, "prometheus": [{}]}},
        "'/networkPolicy/prometheus/0'",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_values_make_helm_fail(helm: Helm, tmp_path: Path, case: str) -> None:
    values, fragment = INVALID[case]
    result = helm_template(helm, tmp_path, values)
    assert result.returncode != 0, f"helm accepted {values}"
    assert fragment in result.stderr, result.stderr


def test_schema_is_strict_at_every_object_level() -> None:
    """Every object with declared properties forbids unknown ones (typos fail, never vanish)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for key, child in node.items():
                visit(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                visit(child, f"{path}/{index}")

    visit(schema, "")
    assert loose == []


def test_defaults_satisfy_the_schema(helm: Helm, tmp_path: Path) -> None:
    """values.yaml itself is checked by helm against the schema on every render."""
    result = helm_template(helm, tmp_path, None)
    assert result.returncode == 0, result.stderr
