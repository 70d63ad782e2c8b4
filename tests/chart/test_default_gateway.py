"""The chart's optional ModelGateway is what the API server and the operator both accept.

Matrix: disabled (the default: no ModelGateway), enabled with defaults, and enabled with every
passed-through field set (namespace among watchNamespaces, LoadBalancer service, a List of route
namespaces, client auth, resources) x checks: the CRD the chart installs admits it (the API
server's admission steps rebuilt offline in tests/crds/crds_apiserver.py: null pruning,
defaulting, schema with unknown fields rejected, CEL rules), the pydantic model the operator
reads it with parses it, and what it says is what the values said. The cross-field rules fail
the render with a sentence (tests/chart/test_values_schema.py lists those cases).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from routeway.manifests import parse_object
from routeway.resources import ModelGateway

from .conftest import RELEASE_NAMESPACE, ROOT, Rendered

ENABLED = {"defaultGateway": {"enabled": True}}
FULL = {
    "watchNamespaces": ["team-a", "team-b"],
    "defaultGateway": {
        "enabled": True,
        "name": "llm",
        "namespace": "team-a",
        "replicas": 3,
        "service": {"type": "LoadBalancer", "port": 8443},
        "allowedRoutes": {"namespaces": {"from": "List", "names": ["team-a", "team-b"]}},
        "auth": {"apiKeySecretRef": {"name": "gateway-keys"}},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    },
}


def load_crds_apiserver() -> ModuleType:
    """tests/crds/crds_apiserver.py under the name the CRD tests import it by (one module)."""
    module = sys.modules.get("crds_apiserver")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "crds_apiserver", ROOT / "tests" / "crds" / "crds_apiserver.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["crds_apiserver"] = module
        spec.loader.exec_module(module)
    return module


def admission_errors(rendered: Rendered, obj: dict[str, Any]) -> list[str]:
    """What the API server serving the chart's own ModelGateway CRD would say on create."""
    crd = rendered.one("CustomResourceDefinition", "modelgateways.routeway.dev")
    errors = load_crds_apiserver().admit(crd, obj).errors
    assert isinstance(errors, list)
    return [str(error) for error in errors]


def test_absent_by_default(template: Callable[..., Rendered]) -> None:
    assert template().of_kind("ModelGateway") == []


@pytest.mark.parametrize("values", [ENABLED, FULL], ids=["defaults", "every-field"])
def test_accepted_by_the_crd_and_the_model(template: Callable[..., Rendered], values: dict[str, Any]) -> None:
    rendered = template(values)
    gateway = rendered.one("ModelGateway")
    assert admission_errors(rendered, gateway) == []
    parsed = parse_object(gateway)
    assert isinstance(parsed, ModelGateway)


def test_defaults(template: Callable[..., Rendered]) -> None:
    gateway = ModelGateway.model_validate(template(ENABLED).one("ModelGateway"))
    assert (gateway.namespace, gateway.name) == (RELEASE_NAMESPACE, "default")
    spec = gateway.spec
    assert spec.replicas == 2
    assert (spec.service.type, spec.service.port) == ("ClusterIP", 80)
    assert spec.allowed_routes.namespaces.from_ == "Same"
    assert spec.auth is None
    assert spec.resources.requests == {} and spec.resources.limits == {}


def test_values_reach_the_spec(template: Callable[..., Rendered]) -> None:
    rendered = template(FULL)
    body = rendered.one("ModelGateway")
    assert body["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    gateway = ModelGateway.model_validate(body)
    assert (gateway.namespace, gateway.name) == ("team-a", "llm")
    spec = gateway.spec
    assert spec.replicas == 3
    assert (spec.service.type, spec.service.port) == ("LoadBalancer", 8443)
    assert spec.allowed_routes.namespaces.from_ == "List"
    assert spec.allowed_routes.namespaces.names == ["team-a", "team-b"]
    assert spec.auth is not None and spec.auth.api_key_secret_ref.name == "gateway-keys"
    assert spec.resources.requests == {"cpu": "500m", "memory": "256Mi"}
    assert spec.resources.limits == {"memory": "1Gi"}


def test_admission_check_is_not_vacuous(template: Callable[..., Rendered]) -> None:
    """Guards the checks above: a gateway the CRD forbids must be refused by the same helper."""
    rendered = template(ENABLED)
    gateway = rendered.one("ModelGateway")
    broken = {**gateway, "spec": {**gateway["spec"], "replicas": -1, "replicaCount": 2}}
    errors = admission_errors(rendered, broken)
    assert any("replicas" in error for error in errors), errors
    assert any("replicaCount" in error for error in errors), errors
    names_without_list = {
        **gateway,
        "spec": {**gateway["spec"], "allowedRoutes": {"namespaces": {"from": "Same", "names": ["x"]}}},
    }
    assert admission_errors(rendered, names_without_list) != []
