"""The operator's RBAC is least privilege, and the same in both scopes.

Matrix: all namespaces (ClusterRole + ClusterRoleBinding) and watched namespaces (a Role and
RoleBinding per namespace, no cluster-wide access to their contents) x checks (no wildcards,
secrets verbs exactly as intended, status written only through the status subresource,
routeway.dev resources match the CRDs, what the proxy Roles grant is held, discovery read-only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .conftest import RELEASE_NAMESPACE, Rendered

WATCHED = {"watchNamespaces": ["team-a", "team-b"]}
READ = {"get", "list", "watch"}
MANAGE = READ | {"create", "patch", "delete"}

# What the operator is expected to hold in each namespace it serves: (group, resource) -> verbs.
EXPECTED = {
    ("routeway.dev", "modelgateways"): READ | {"patch"},
    ("routeway.dev", "modelroutes"): READ | {"patch"},
    ("routeway.dev", "modelbackends"): READ | {"patch"},
    ("routeway.dev", "modelclients"): READ | {"patch"},
    ("routeway.dev", "modelgateways/status"): {"patch"},
    ("routeway.dev", "modelroutes/status"): {"patch"},
    ("routeway.dev", "modelbackends/status"): {"patch"},
    ("routeway.dev", "modelclients/status"): {"patch"},
    ("routeway.dev", "modelgateways/finalizers"): {"update"},
    ("routeway.dev", "modelroutes/finalizers"): {"update"},
    ("", "secrets"): MANAGE,
    ("", "configmaps"): MANAGE,
    ("", "services"): MANAGE,
    ("", "serviceaccounts"): MANAGE,
    ("apps", "deployments"): MANAGE,
    ("apps", "controllerrevisions"): MANAGE,  # route revisions (patch: kept for relabelling)
    ("", "pods"): READ,  # the gateways' proxy pods, read for rollout analysis
    ("policy", "poddisruptionbudgets"): MANAGE,
    ("rbac.authorization.k8s.io", "roles"): MANAGE,
    ("rbac.authorization.k8s.io", "rolebindings"): MANAGE,
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """Flattens a role's rules into (group, resource) -> verbs."""
    result: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                result.setdefault((group, resource), set()).update(rule["verbs"])
    return result


def all_roles(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("ClusterRole") + rendered.of_kind("Role")


@pytest.mark.parametrize("values", [{}, WATCHED], ids=["all-namespaces", "watch-namespaces"])
def test_no_wildcards_and_no_escalation_verbs(
    template: Callable[..., Rendered], values: dict[str, Any]
) -> None:
    for role in all_roles(template(values)):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            # The proxy Roles it creates are covered by what it holds: no escalate/bind/impersonate.
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
            # Everything is patched (server-side apply or merge patch); the only update is the
            # owner-reference finalizers check, which the API server phrases as an update.
            if "update" in rule["verbs"]:
                assert rule["resources"] == ["modelgateways/finalizers", "modelroutes/finalizers"], rule


def test_all_namespaces_uses_one_cluster_role(template: Callable[..., Rendered]) -> None:
    rendered = template()
    assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == []
    role = rendered.one("ClusterRole", "rw-routeway")
    assert grants(role) == EXPECTED | {("kopf.dev", "clusterkopfpeerings"): READ | {"patch"}}
    binding = rendered.one("ClusterRoleBinding", "rw-routeway")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "rw-routeway",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rw-routeway", "namespace": RELEASE_NAMESPACE}
    ]


def test_watched_namespaces_use_a_role_each(template: Callable[..., Rendered]) -> None:
    rendered = template(WATCHED)
    assert [r["metadata"]["name"] for r in rendered.of_kind("ClusterRole")] == ["rw-routeway-discovery"]
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert grants(role) == EXPECTED | {("kopf.dev", "kopfpeerings"): READ | {"patch"}}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert set(bindings) == {"team-a", "team-b"}
    for namespace, binding in bindings.items():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == roles[namespace]["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rw-routeway", "namespace": RELEASE_NAMESPACE}
        ]


@pytest.mark.parametrize("values", [{}, WATCHED], ids=["all-namespaces", "watch-namespaces"])
def test_secrets_verbs_are_exactly_as_intended(
    template: Callable[..., Rendered], values: dict[str, Any]
) -> None:
    """Read referenced credentials; write each gateway's credentials Secret. Nothing else."""
    for role in all_roles(template(values)):
        verbs = grants(role).get(("", "secrets"))
        if role["metadata"]["name"].endswith("-discovery"):
            assert verbs is None
        else:
            assert verbs == {"get", "list", "watch", "create", "patch", "delete"}


@pytest.mark.parametrize("values", [{}, WATCHED], ids=["all-namespaces", "watch-namespaces"])
def test_discovery_is_read_only(template: Callable[..., Rendered], values: dict[str, Any]) -> None:
    role = template(values).one("ClusterRole", "rw-routeway-discovery")
    expected = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
    if values:
        # Namespaced kopf lists namespaces to notice a watched one appearing.
        expected[("", "namespaces")] = {"list", "watch"}
    assert grants(role) == expected


def test_routeway_resources_match_the_crds(template: Callable[..., Rendered]) -> None:
    rendered = template()
    crds = {
        c["spec"]["names"]["plural"]: c["spec"]
        for c in rendered.of_kind("CustomResourceDefinition")
        if c["spec"]["group"] == "routeway.dev"
    }
    for group, resource in grants(rendered.one("ClusterRole", "rw-routeway")):
        if group != "routeway.dev":
            continue
        plural, _, subresource = resource.partition("/")
        assert plural in crds, f"RBAC names {resource}, no such CRD"
        if subresource == "status":
            assert all("status" in v.get("subresources", {}) for v in crds[plural]["versions"]), plural
    assert set(crds) == {"modelgateways", "modelroutes", "modelbackends", "modelclients"}


def test_operator_holds_what_proxy_roles_grant(template: Callable[..., Rendered]) -> None:
    """The API server lets it create the proxy's Role only if it holds those permissions itself."""
    held = grants(template().one("ClusterRole", "rw-routeway"))
    for resource in ("configmaps", "secrets"):
        assert held[("", resource)] >= READ
