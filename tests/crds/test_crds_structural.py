"""The generated CRDs obey the rules the API server checks when a CRD is created.

Rules from apiextensions-apiserver (`ValidateCustomResourceDefinitionOpenAPISchema`,
`ValidateStructural`, `validateMapListKeysMapSet`, defaulting's `ValidateDefaults`).
Matrix:
- every node has a type (or preserve-unknown-fields / int-or-string), a known one;
- no $ref, definitions, anyOf/oneOf/allOf/not, patternProperties, uniqueItems, type null;
- properties and additionalProperties never together, additionalProperties never false;
- metadata at the root is a bare object; no default under metadata, apiVersion or kind;
- list-type map: items are objects, keys scalar, required or defaulted, never nullable;
- no nullable anywhere (the design: optional means absent), no null defaults;
- every default, pruned and defaulted, validates against its own node, CEL rules included;
- every CEL rule compiles and has a one-line message; comprehensions iterate bounded lists
  only, within the API server's per-call cost limit by a coarse upper bound; no rule reads an
  untyped field (Kubernetes leaves those out of CEL's types, so the rule would not compile);
- every field has a description (kubectl explain), printer columns point at real fields of
  the right type, names and short names match the models;
- kubernetes-validate accepts the CRD documents as apiextensions.k8s.io/v1 objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from crds_apiserver import admit_value, compile_rule, openapi_schema

from routeway.resources import CUSTOM_KINDS

KINDS = [model.KIND for model in CUSTOM_KINDS]
TYPES = {"string", "number", "integer", "boolean", "array", "object"}
FORBIDDEN_KEYWORDS = {
    "$ref",
    "definitions",
    "$defs",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "patternProperties",
    "additionalItems",
    "dependencies",
    "id",
    "title",
}
# PerCallLimit of the API server's CEL runtime; the static estimate limit (1e7) is looser.
CEL_PER_CALL_LIMIT = 1_000_000
# Generous cost of one iteration of a comprehension body over a short string comparison.
CEL_COST_PER_ITERATION = 100

Node = tuple[str, dict[str, Any]]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[Node]:
    """Every schema node with its path (`.spec.backends[].name`), parents first."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


@pytest.fixture(params=KINDS)
def crd(request: pytest.FixtureRequest, crds_by_kind: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return crds_by_kind[request.param]


def problems(crd: dict[str, Any], check: Any) -> list[str]:
    found: list[str] = []
    for path, node in walk(openapi_schema(crd)):
        found += [f"{path or '<root>'}: {p}" for p in check(path, node)]
    return found


def test_every_node_has_a_known_type(crd: dict[str, Any]) -> None:
    def check(path: str, node: dict[str, Any]) -> list[str]:
        if "type" in node:
            return [] if node["type"] in TYPES else [f"unknown type {node['type']!r}"]
        if node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string"):
            return []
        return ["no type"]

    assert problems(crd, check) == []


def test_no_keyword_the_api_server_forbids(crd: dict[str, Any]) -> None:
    def check(path: str, node: dict[str, Any]) -> list[str]:
        found = [f"forbidden keyword {k}" for k in FORBIDDEN_KEYWORDS & set(node)]
        if node.get("uniqueItems"):
            found.append("uniqueItems: true (quadratic)")
        if "properties" in node and "additionalProperties" in node:
            found.append("properties and additionalProperties are mutually exclusive")
        if node.get("additionalProperties") is False:
            found.append("additionalProperties: false")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            found.append("array without an items schema")
        if node.get("x-kubernetes-preserve-unknown-fields") not in (None, True):
            found.append("x-kubernetes-preserve-unknown-fields must be true or absent")
        return found

    assert problems(crd, check) == []


def test_root_and_metadata_are_what_the_api_server_allows(crd: dict[str, Any]) -> None:
    root = openapi_schema(crd)
    assert root["type"] == "object"
    assert "additionalProperties" not in root
    assert root["properties"]["metadata"] == {"type": "object"}
    for name in ("apiVersion", "kind", "metadata"):
        assert all("default" not in node for _, node in walk(root["properties"][name])), name
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}


def test_list_types_are_valid(crd: dict[str, Any]) -> None:
    def check(path: str, node: dict[str, Any]) -> list[str]:
        list_type = node.get("x-kubernetes-list-type")
        if list_type is None:
            return ["list-map-keys without list-type map"] if "x-kubernetes-list-map-keys" in node else []
        if node.get("type") != "array" or list_type not in ("atomic", "set", "map"):
            return [f"bad list type {list_type!r} on {node.get('type')}"]
        if list_type != "map":
            return []
        items = node["items"]
        keys = node.get("x-kubernetes-list-map-keys", [])
        found = [] if keys and items.get("type") == "object" else ["map list needs object items and keys"]
        if items.get("nullable"):
            found.append("map list items cannot be nullable")
        for key in keys:
            prop = items.get("properties", {}).get(key)
            if prop is None or prop.get("type") in ("array", "object") or prop.get("nullable"):
                found.append(f"map key {key} must be a non-nullable scalar property")
            elif key not in items.get("required", []) and "default" not in prop:
                found.append(f"map key {key} must be required or defaulted")
        return found

    assert problems(crd, check) == []


def test_conditions_and_route_backends_are_keyed_lists(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """Server-side apply merges these by key, and the API server rejects duplicate keys."""
    for kind, crd in crds_by_kind.items():
        conditions = openapi_schema(crd)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map", kind
        assert conditions["x-kubernetes-list-map-keys"] == ["type"], kind
    backends = openapi_schema(crds_by_kind["ModelRoute"])["properties"]["spec"]["properties"]["backends"]
    assert backends["x-kubernetes-list-map-keys"] == ["name"]


def test_optional_means_absent_never_null(crd: dict[str, Any]) -> None:
    """No `nullable`: a null is then pruned before defaulting, exactly like pydantic's None."""

    def check(path: str, node: dict[str, Any]) -> list[str]:
        found = ["nullable"] if "nullable" in node else []
        if "default" in node and node["default"] is None:
            found.append("null default")
        return found

    assert problems(crd, check) == []


def test_defaults_are_valid_against_their_own_schema(crd: dict[str, Any]) -> None:
    """The API server prunes and defaults each default, then validates it, CEL rules included."""
    checked = 0
    for path, node in walk(openapi_schema(crd)):
        if "default" in node:
            admission = admit_value(node["default"], node, at_root=False)
            assert admission.accepted, f"{path}: default {node['default']!r}: {admission.errors}"
            checked += 1
    assert checked > 0


def test_cel_rules_compile_with_one_line_messages(crd: dict[str, Any]) -> None:
    rules = [
        (path, validation)
        for path, node in walk(openapi_schema(crd))
        for validation in node.get("x-kubernetes-validations", [])
    ]
    for path, validation in rules:
        assert validation["rule"].strip(), path
        assert validation.get("message", "").strip() and "\n" not in validation["message"], path
        compile_rule(validation["rule"])


def _hidden_from_cel(node: dict[str, Any]) -> bool:
    """Kubernetes' SchemaDeclType gives an untyped node (preserve-unknown-fields, no type) no
    CEL type; its field is then absent from the object's CEL type."""
    return "type" not in node and not node.get("x-kubernetes-int-or-string")


def test_cel_rules_read_no_field_hidden_from_cel(crd: dict[str, Any]) -> None:
    """The offline evaluator types everything `dyn`, so only this test catches such a rule."""
    for path, node in walk(openapi_schema(crd)):
        hidden = {
            sub_path.rsplit(".", 1)[-1]
            for sub_path, sub_node in walk(node)
            if sub_path and not sub_path.endswith(("[]", ".*")) and _hidden_from_cel(sub_node)
        }
        for validation in node.get("x-kubernetes-validations", []):
            for name in hidden:
                assert not re.search(rf"\.{name}\b(?!\s*\()", validation["rule"]), (
                    f"{path}: {validation['rule']} reads {name}, which Kubernetes hides from CEL"
                )


def test_the_untyped_metric_max_is_the_only_field_hidden_from_cel(
    crds_by_kind: dict[str, dict[str, Any]],
) -> None:
    """So that the test above has something to guard, and a new untyped field is a decision."""
    hidden = [
        f"{kind}{path}"
        for kind, crd in crds_by_kind.items()
        for path, node in walk(openapi_schema(crd))
        if path and path != ".metadata" and _hidden_from_cel(node)
    ]
    assert hidden == ["ModelRoute.spec.strategy.canary.analysis.metrics[].max"]


def _lists_iterated(rule: str) -> list[str]:
    """Field paths a rule runs a macro over: `self.backends.all(` -> `backends`."""
    return re.findall(r"self((?:\.\w+)+)\.(?:all|exists|exists_one|map|filter)\(", rule)


def test_cel_comprehensions_have_a_bounded_cost(crd: dict[str, Any]) -> None:
    """The API server rejects a CRD whose rule may cost too much: lists iterated need maxItems.

    Upper bound used here: the product of the maxItems of every list a rule iterates (nested
    comprehensions multiply) times a generous per-iteration cost.
    """
    for path, node in walk(openapi_schema(crd)):
        for validation in node.get("x-kubernetes-validations", []):
            bound = CEL_COST_PER_ITERATION
            for field_path in _lists_iterated(validation["rule"]):
                target: dict[str, Any] | None = node
                for part in field_path.strip(".").split("."):
                    target = (target or {}).get("properties", {}).get(part)
                assert target is not None and target.get("type") == "array", f"{path}: {field_path}"
                assert "maxItems" in target, (
                    f"{path}{field_path} is iterated by a CEL rule: it needs maxItems"
                )
                bound *= target["maxItems"]
            assert bound <= CEL_PER_CALL_LIMIT, f"{path}: {validation['rule']} may cost {bound}"


def test_every_field_has_a_description(crd: dict[str, Any]) -> None:
    """`kubectl explain` shows these; list items and map values inherit their parent's."""
    missing = [
        path
        for path, node in walk(openapi_schema(crd))
        if path and path != ".metadata" and not path.endswith(("[]", ".*")) and not node.get("description")
    ]
    assert missing == [], "fields without a description (add description= in routeway/resources/)"


def test_printer_columns_show_real_fields(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    root = openapi_schema(crd)
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[-2:] == ["Ready", "Age"]
    for column in version["additionalPrinterColumns"]:
        assert column["type"] in {"integer", "number", "string", "boolean", "date"}
        path = column["jsonPath"]
        if column["name"] == "Age":
            assert path == ".metadata.creationTimestamp"
            continue
        if column["name"] == "Ready":
            assert path == '.status.conditions[?(@.type=="Ready")].status'
            condition = root["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
            assert {"type", "status"} <= set(condition)
            continue
        node: dict[str, Any] | None = root
        for part in path.strip(".").split("."):
            node = (node or {}).get("properties", {}).get(part)
        assert node is not None, f"{column['name']}: {path} is not a field"
        assert node["type"] == column["type"], column["name"]


def test_route_columns_show_the_rollout(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """Pinned by issue 12: MODEL, PHASE, STABLE, CANARY, WEIGHT, STEP, READY, AGE, in order."""
    (version,) = crds_by_kind["ModelRoute"]["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Model", ".spec.model"),
        ("Phase", ".status.rollout.phase"),
        ("Stable", ".status.rollout.stableRevision"),
        ("Canary", ".status.rollout.canaryRevision"),
        ("Weight", ".status.rollout.canaryWeight"),
        ("Step", ".status.rollout.currentStepIndex"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_client_columns(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """Pinned by issue 13: `kubectl get mc` shows GATEWAY, MODELS, RPM, TPM, READY (and AGE);
    the operator writes status.gateway and status.models (tests/operator/test_operator_clients.py)."""
    (version,) = crds_by_kind["ModelClient"]["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Gateway", ".status.gateway"),
        ("Models", ".status.models"),
        ("RPM", ".spec.limits.requestsPerMinute"),
        ("TPM", ".spec.limits.tokensPerMinute"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_names_scope_and_versions(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    for model in CUSTOM_KINDS:
        crd = crds_by_kind[model.KIND]
        spec = crd["spec"]
        assert crd["metadata"]["name"] == f"{model.PLURAL}.routeway.dev"
        assert spec["group"] == "routeway.dev" and spec["scope"] == "Namespaced"
        assert spec["names"] == {
            "kind": model.KIND,
            "listKind": f"{model.KIND}List",
            "plural": model.PLURAL,
            "singular": model.KIND.lower(),
            "shortNames": list(model.SHORT_NAMES),
            "categories": ["routeway"],
        }
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kubernetes_version", ["1.25", kubernetes_validate.latest_version()])
def test_kubernetes_validate_accepts_the_crd_documents(crd: dict[str, Any], kubernetes_version: str) -> None:
    """The CRD objects themselves, against apiextensions.k8s.io/v1 with unknown fields forbidden."""
    kubernetes_validate.validate(crd, kubernetes_version, strict=True)
