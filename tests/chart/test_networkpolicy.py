"""The proxies' optional NetworkPolicy selects the pods the operator really creates.

The truth is the operator's own builder: the chart's default ModelGateway (and gateways of other
names) is parsed with the operator's model and turned into the proxy Deployment by
`build_deployment`; the policy's pod selector must match that Deployment's pod labels and no
label of the operator's own pods, and its two ports must be the container ports named `http`
(the API) and `admin` (metrics, /routes, /config).

Matrix: the default (on), disabled, enabled with defaults, watched namespaces, an extra gateway
namespace, explicit namespaces, and custom selectors with ipBlocks x checks: valid against the
Kubernetes schema (strict), which namespaces get a policy, who may reach which port; and the
gateway's Service, which must not expose the admin port the policy protects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from routeway_operator.builders import build_deployment, build_service
from routeway_operator.settings import OperatorSettings

from routeway.resources import ModelGateway

from .conftest import RELEASE_NAMESPACE, Rendered

KUBERNETES_VERSION = "1.33"
ENABLED = {"networkPolicy": {"enabled": True}}
WITH_GATEWAY = {"networkPolicy": {"enabled": True}, "defaultGateway": {"enabled": True}}
CUSTOM: dict[str, Any] = {
    "networkPolicy": {
        "enabled": True,
        "api": {
            "namespaceSelector": {"matchLabels": {"routeway.dev/clients": "true"}},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
            "ipBlocks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}, {"cidr": "fd00::/8"}],
        },
        "prometheus": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app": "prometheus"}},
            },
            {"ipBlock": {"cidr": "192.168.10.5/32"}},
        ],
    }
}


def proxy_pod(gateway: dict[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """(pod labels, container ports by name) of the proxy Deployment the operator builds."""
    deployment = build_deployment(ModelGateway.model_validate(gateway), OperatorSettings())
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    return template["metadata"]["labels"], {p["name"]: p["containerPort"] for p in container["ports"]}


def ingress_rule(policy: dict[str, Any], port: int) -> dict[str, Any]:
    rules = [
        rule for rule in policy["spec"]["ingress"] if rule["ports"] == [{"port": port, "protocol": "TCP"}]
    ]
    assert len(rules) == 1, f"expected one rule for port {port}: {policy['spec']['ingress']}"
    return dict(rules[0])


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "the chart's selectors use matchLabels only"
    return bool(selector["matchLabels"].items() <= labels.items())


def test_on_by_default_and_removable(template: Callable[..., Rendered]) -> None:
    """The admin port answers without authentication: by default only the operator and
    Prometheus reach it (issue 14 item 12); `enabled: false` removes the policy."""
    (policy,) = template().of_kind("NetworkPolicy")
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == [8080, 9090]
    assert template({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy") == []


def test_gateway_service_does_not_expose_the_admin_port(template: Callable[..., Rendered]) -> None:
    """The policy guards pod addresses; the Service (maybe a LoadBalancer) must not route to admin."""
    document = template(WITH_GATEWAY).one("ModelGateway")
    document["spec"]["service"] = {"type": "LoadBalancer", "port": 443}
    _, ports = proxy_pod(document)
    service = build_service(ModelGateway.model_validate(document))
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(443, "http")]
    assert ports["http"] != ports["admin"]


@pytest.mark.parametrize(
    "values", [ENABLED, WITH_GATEWAY, CUSTOM], ids=["defaults", "with-gateway", "custom"]
)
def test_policies_are_valid(template: Callable[..., Rendered], values: dict[str, Any]) -> None:
    policies = template(values).of_kind("NetworkPolicy")
    assert policies
    for policy in policies:
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress to upstreams stays open


@pytest.mark.parametrize("name", ["default", "llm", "a" * 60])
def test_selects_the_proxy_pods_the_operator_creates(template: Callable[..., Rendered], name: str) -> None:
    rendered = template(WITH_GATEWAY | {"defaultGateway": {"enabled": True, "name": name}})
    labels, ports = proxy_pod(rendered.one("ModelGateway"))
    policy = rendered.one("NetworkPolicy")
    assert matches(policy["spec"]["podSelector"], labels), (policy["spec"]["podSelector"], labels)
    assert set(ports) == {"http", "admin"}
    ingress_rule(policy, ports["http"])
    ingress_rule(policy, ports["admin"])
    assert len(policy["spec"]["ingress"]) == 2


def test_does_not_select_the_operator(template: Callable[..., Rendered]) -> None:
    rendered = template(ENABLED)
    operator_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not matches(rendered.one("NetworkPolicy")["spec"]["podSelector"], operator_labels)


def test_admin_port_is_for_the_operator_and_prometheus(template: Callable[..., Rendered]) -> None:
    rendered = template(WITH_GATEWAY)
    _, ports = proxy_pod(rendered.one("ModelGateway"))
    operator_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    operator, prometheus = ingress_rule(rendered.one("NetworkPolicy"), ports["admin"])["from"]
    assert operator["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}
    }
    assert matches(operator["podSelector"], operator_labels)
    assert prometheus == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def test_api_port_defaults_to_every_namespace(template: Callable[..., Rendered]) -> None:
    rendered = template(WITH_GATEWAY)
    _, ports = proxy_pod(rendered.one("ModelGateway"))
    assert ingress_rule(rendered.one("NetworkPolicy"), ports["http"])["from"] == [{"namespaceSelector": {}}]


def test_selectors_and_ip_blocks_follow_values(template: Callable[..., Rendered]) -> None:
    policy = template(CUSTOM).one("NetworkPolicy")
    api = CUSTOM["networkPolicy"]["api"]
    assert ingress_rule(policy, 8080)["from"] == [
        {"namespaceSelector": api["namespaceSelector"], "podSelector": api["podSelector"]},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]
    # a list, so the default peer is replaced, not merged with (as a map would be)
    assert ingress_rule(policy, 9090)["from"][1:] == CUSTOM["networkPolicy"]["prometheus"]


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        (ENABLED, [RELEASE_NAMESPACE]),
        ({**ENABLED, "watchNamespaces": ["team-a", "team-b"]}, ["team-a", "team-b"]),
        (
            {**WITH_GATEWAY, "defaultGateway": {"enabled": True, "namespace": "llm"}},
            [RELEASE_NAMESPACE, "llm"],
        ),
        (
            {
                **WITH_GATEWAY,
                "watchNamespaces": ["team-a", "team-b"],
                "defaultGateway": {"enabled": True, "namespace": "team-b"},
            },
            ["team-a", "team-b"],
        ),
        (
            {"networkPolicy": {"enabled": True, "namespaces": ["ml", "apps"]}, "watchNamespaces": ["x"]},
            ["ml", "apps"],
        ),
    ],
    ids=["release-namespace", "watch-namespaces", "gateway-namespace", "gateway-among-watched", "explicit"],
)
def test_one_policy_per_gateway_namespace(
    template: Callable[..., Rendered], values: dict[str, Any], namespaces: list[str]
) -> None:
    policies = template(values).of_kind("NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == namespaces
    assert {p["metadata"]["name"] for p in policies} == {"rw-routeway-proxy"}


def test_admin_port_without_prometheus(template: Callable[..., Rendered]) -> None:
    policy = template({"networkPolicy": {"enabled": True, "prometheus": []}}).one("NetworkPolicy")
    (operator,) = ingress_rule(policy, 9090)["from"]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
