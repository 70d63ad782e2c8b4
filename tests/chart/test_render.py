"""The chart renders valid Kubernetes objects for every supported shape of values.

Matrix: value sets (defaults, watched namespaces, ServiceMonitor on, two replicas, a separate
proxy image, a digest-pinned image, the optional dashboard, default gateway and network policy)
x checks (helm lint --strict, every built-in object valid against the Kubernetes 1.33 schema in
strict mode, custom objects served by a CRD in the chart, security context, the operator's
environment contract, probes, metrics wiring).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .conftest import CHART, RELEASE_NAMESPACE, Helm, Rendered, helm_template

KUBERNETES_VERSION = "1.33"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "two-replicas": {"replicas": 2},
    "proxy-image": {
        "image": {"repository": "registry.example:5000/routeway", "tag": "1.2.3", "pullPolicy": "Always"},
        "proxy": {"image": {"repository": "registry.example:5000/routeway-proxy"}},
    },
    "digest-and-scheduling": {
        "image": {"tag": "sha256:" + "a" * 64},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "routeway"}},
                        },
                    }
                ]
            }
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "platform"},
        "priorityClassName": "system-cluster-critical",
        "metrics": {"enabled": False, "port": 9090},
    },
    "optional-features": {
        "watchNamespaces": ["team-a"],
        "grafanaDashboard": {"enabled": True, "folder": "Routeway"},
        "defaultGateway": {"enabled": True, "namespace": "team-a"},
        "networkPolicy": {"enabled": True},
    },
}

# Kinds no bundled schema covers, each with the reason and what checks it instead.
CUSTOM_KINDS = {
    "ServiceMonitor": "Prometheus Operator CRD, not bundled with the chart; test_service_monitor checks it",
    "ClusterKopfPeering": "kopf CRD shipped in crds/; test_custom_objects_are_served_by_chart_crds checks it",
    "KopfPeering": "kopf CRD shipped in crds/; test_custom_objects_are_served_by_chart_crds checks it",
    "ModelGateway": "the project's CRD in crds/; test_default_gateway.py admits it with that CRD",
}


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def operator_container(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_lint_strict_passes(helm: Helm, value_set: str, tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[value_set]))
    result = helm.run(
        "lint", "--strict", str(CHART), "--namespace", RELEASE_NAMESPACE, "--values", str(values)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_builtin_objects_validate_against_kubernetes_schema(
    template: Callable[..., Rendered], value_set: str
) -> None:
    rendered = template(VALUE_SETS[value_set])
    checked = 0
    for obj in rendered.objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
        checked += 1
    assert checked >= 8


def test_validator_is_strict_about_unknown_fields(template: Callable[..., Rendered]) -> None:
    """Guards the test above: a misspelt field must not pass silently."""
    deployment = yaml.safe_load(yaml.safe_dump(template().one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_custom_objects_are_served_by_chart_crds(template: Callable[..., Rendered], value_set: str) -> None:
    rendered = template(VALUE_SETS[value_set])
    served = {}
    for crd in rendered.of_kind("CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            if version["served"]:
                served[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = spec["scope"]
    for obj in rendered.objects:
        if obj["kind"] not in CUSTOM_KINDS or obj["kind"] == "ServiceMonitor":
            continue
        scope = served.get((obj["apiVersion"], obj["kind"]))
        assert scope is not None, f"{obj['apiVersion']} {obj['kind']} has no CRD in the chart"
        assert ("namespace" in obj["metadata"]) == (scope == "Namespaced"), obj["metadata"]


def test_every_namespaced_object_names_its_namespace(
    template: Callable[..., Rendered], value_set: str
) -> None:
    """`kubectl apply -f` of rendered output must land where helm would have put it."""
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}
    for obj in template(VALUE_SETS[value_set]).objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace"), f"{obj['kind']}/{obj['metadata']['name']}"


def test_pod_runs_non_root_read_only_without_privileges(
    template: Callable[..., Rendered], value_set: str
) -> None:
    rendered = template(VALUE_SETS[value_set])
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(rendered)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    # A read-only root needs a writable scratch directory.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["resources"]["limits"]["memory"]


def test_operator_environment_contract(template: Callable[..., Rendered]) -> None:
    """The settings the operator reads at startup; the operator's settings loader must match."""
    container = operator_container(template())
    assert container["command"] == ["routeway"]
    assert container["args"] == ["operator"]
    env = env_of(container)
    assert env["ROUTEWAY_NAMESPACES"] == ""
    assert env["ROUTEWAY_PROXY_IMAGE"] == "routeway:0.1.0"
    assert env["ROUTEWAY_LOG_LEVEL"] == "info"
    assert env["ROUTEWAY_RESYNC_INTERVAL"] == "300"
    assert env["ROUTEWAY_PEERING_NAME"] == "rw-routeway"
    assert env["ROUTEWAY_LIVENESS_PORT"] == "8080"
    assert env["ROUTEWAY_METRICS_PORT"] == "9090"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["image"] == "routeway:0.1.0"


def test_environment_follows_values(template: Callable[..., Rendered]) -> None:
    env = env_of(operator_container(template(VALUE_SETS["watch-namespaces"] | {"logLevel": "debug"})))
    assert env["ROUTEWAY_NAMESPACES"] == "team-a,team-b"
    assert env["ROUTEWAY_LOG_LEVEL"] == "debug"
    proxy = template(VALUE_SETS["proxy-image"])
    assert operator_container(proxy)["image"] == "registry.example:5000/routeway:1.2.3"
    assert (
        env_of(operator_container(proxy))["ROUTEWAY_PROXY_IMAGE"]
        == "registry.example:5000/routeway-proxy:1.2.3"
    )
    digest = operator_container(template(VALUE_SETS["digest-and-scheduling"]))
    assert digest["image"] == "routeway@sha256:" + "a" * 64
    assert "ROUTEWAY_METRICS_PORT" not in env_of(digest)


def test_probes_use_kopf_liveness_endpoint(template: Callable[..., Rendered]) -> None:
    container = operator_container(template())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "readinessProbe" not in container


def test_replicas_and_disruption_budget(template: Callable[..., Rendered]) -> None:
    single = template()
    assert single.one("Deployment")["spec"]["replicas"] == 1
    assert single.of_kind("PodDisruptionBudget") == []
    double = template(VALUE_SETS["two-replicas"])
    deployment = double.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    # Never two new pods beside the old ones: peering keeps one active, surge would only add churn.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    pdb = double.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_peering_objects_match_scope(template: Callable[..., Rendered]) -> None:
    cluster = template()
    assert cluster.one("ClusterKopfPeering")["metadata"]["name"] == "rw-routeway"
    assert cluster.of_kind("KopfPeering") == []
    namespaced = template(VALUE_SETS["watch-namespaces"])
    assert namespaced.of_kind("ClusterKopfPeering") == []
    peerings = {
        (p["metadata"]["namespace"], p["metadata"]["name"]) for p in namespaced.of_kind("KopfPeering")
    }
    assert peerings == {("team-a", "rw-routeway"), ("team-b", "rw-routeway")}


def test_metrics_service_selects_operator_pods(template: Callable[..., Rendered]) -> None:
    rendered = template()
    service = rendered.one("Service", "rw-routeway-metrics")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert template(VALUE_SETS["digest-and-scheduling"]).of_kind("Service") == []


def test_service_monitor(template: Callable[..., Rendered]) -> None:
    assert template().of_kind("ServiceMonitor") == []
    rendered = template(VALUE_SETS["service-monitor"])
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = rendered.one("Service", "rw-routeway-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_oldest_supported_kubernetes(helm: Helm, tmp_path: Path) -> None:
    """Chart.yaml's kubeVersion floor is honest: helm enforces it and every object fits that schema."""
    floor = re.fullmatch(
        r">=(\d+\.\d+)\.0-0", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    )
    assert floor, "kubeVersion should be a plain >=X.Y.0-0 floor"
    major, minor = (int(part) for part in floor[1].split("."))
    too_old = helm_template(helm, tmp_path, None, "--kube-version", f"{major}.{minor - 1}.0")
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr, too_old.stderr
    for values in ({"replicas": 2}, VALUE_SETS["watch-namespaces"]):
        result = helm_template(helm, tmp_path, values, "--kube-version", f"{major}.{minor}.0")
        assert result.returncode == 0, result.stderr
        for obj in (doc for doc in yaml.safe_load_all(result.stdout) if doc):
            if obj["kind"] not in CUSTOM_KINDS:
                kubernetes_validate.validate(obj, floor[1], strict=True)


def test_readme_documents_the_environment_contract(template: Callable[..., Rendered]) -> None:
    readme = (CHART / "README.md").read_text()
    section = readme.partition("## Operator environment")[2]
    documented = set(re.findall(r"`((?:ROUTEWAY|POD)_[A-Z_]+)`", section))
    assert documented == set(env_of(operator_container(template())))
