"""What the API server does to a custom object before it stores it, rebuilt offline.

No API server can run here (see /work/shared/testing.md), so the tests rebuild the steps that
decide whether a ModelRoute/ModelBackend/ModelGateway is accepted, in the server's order:

1. `prune_nulls`: a null in a non-nullable field without a default is dropped
   (port of apiextensions-apiserver `defaulting.PruneNonNullableNullsWithoutDefaults`);
2. `apply_defaults`: schema defaults are set, then their own nested defaults
   (port of `defaulting.Default`);
3. OpenAPI validation: the CRD schema translated for `jsonschema` by `to_jsonschema`, unknown
   fields rejected as `kubectl --validate=strict` (the default since 1.27) has the server do;
4. list-type checks: duplicate keys in `x-kubernetes-list-type: map|set` lists;
5. `x-kubernetes-validations`: every CEL rule evaluated with cel-expr-python (Google's
   cel-cpp), with the string, optional and math extensions the Kubernetes CEL environment has,
   and those functions of Kubernetes' own CEL libraries the rules use, rewritten here from
   their documented behaviour (`KUBERNETES_FUNCTIONS`; tested in test_crds_emulation).

What stays for a real cluster (the e2e suite): CEL type checking and cost estimation at CRD
creation (here every value is `dyn`, so a rule reading a field Kubernetes hides from CEL still
compiles: test_crds_structural guards that case), the Kubernetes CEL functions not rewritten
here (isURL, quantity, ...), metadata validation, ratcheting.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import jsonschema

# Imported at module level on purpose: without cel-expr-python the CEL tests must fail at
# collection, loudly, rather than skip or pass without evaluating a rule.
from cel_expr_python import cel
from cel_expr_python.ext import ext_math, ext_optional, ext_strings

JsonDict = dict[str, Any]


def is_sorted(values: Any) -> bool:
    """Kubernetes' `<list<T>>.isSorted()` (k8s.io/apiserver/pkg/cel/library/lists.go): true
    when no element is greater than the one after it, so equal neighbours are sorted."""
    return all(a <= b for a, b in itertools.pairwise(values))


KUBERNETES_FUNCTIONS = [
    cel.FunctionDecl(
        "isSorted",
        [
            cel.Overload(
                "list_is_sorted",
                cel.Type.BOOL,
                [cel.Type.List(cel.Type.DYN)],
                is_member=True,
                impl=is_sorted,
            )
        ],
    ),
]

_CEL_ENV = cel.NewEnv(
    variables={"self": cel.Type.DYN},
    extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional(), ext_math.ExtMath()],
    functions=KUBERNETES_FUNCTIONS,
)
_COMPILED: dict[str, Any] = {}


def compile_rule(rule: str) -> Any:
    """Compile (once) a CEL rule; a syntax error raises RuntimeError."""
    if rule not in _COMPILED:
        _COMPILED[rule] = _CEL_ENV.compile(rule)
    return _COMPILED[rule]


def evaluate_rule(rule: str, value: Any) -> tuple[bool, str | None]:
    """(passed, evaluation error). As in Kubernetes, an evaluation error fails the rule."""
    result = compile_rule(rule).eval(data={"self": value})
    if result.type() == cel.Type.ERROR:
        return False, str(result.value())
    if result.type() != cel.Type.BOOL:
        return False, f"rule returned {result.type().name()}, not bool"
    return bool(result.value()), None


def openapi_schema(crd: JsonDict) -> JsonDict:
    """The storage version's openAPIV3Schema."""
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: JsonDict = version["schema"]["openAPIV3Schema"]
    return schema


# ----------------------------------------------------------------------------- jsonschema


def to_jsonschema(node: JsonDict, *, at_root: bool = True) -> JsonDict:
    """Translate a structural schema node into JSON Schema 2020-12 for `jsonschema`.

    Drops the x-kubernetes-* extensions, turns `nullable` into a null type, int-or-string into
    anyOf, OpenAPI 3.0's boolean exclusive bounds into numbers, and closes every object the
    API server would prune (it has properties, or is empty, and does not preserve unknown
    fields). `metadata` at the root stays open: ObjectMeta is validated by the server itself.
    """
    out: JsonDict = {}
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "exclusiveMinimum", "exclusiveMaximum"):
            continue
        if key == "properties":
            out["properties"] = {
                name: (
                    {"type": "object"}
                    if at_root and name == "metadata"
                    else to_jsonschema(child, at_root=False)
                )
                for name, child in value.items()
            }
        elif key == "items":
            out["items"] = to_jsonschema(value, at_root=False)
        elif key == "additionalProperties":
            out["additionalProperties"] = (
                to_jsonschema(value, at_root=False) if isinstance(value, dict) else value
            )
        else:
            out[key] = copy.deepcopy(value)
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(flag) is True:
            out[flag] = out.pop(bound)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("type") == "object" and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


# ----------------------------------------------------------------------------- defaulting


def _child_schema(schema: JsonDict | None, key: str) -> JsonDict | None:
    if schema is None:
        return None
    props = schema.get("properties", {})
    if key in props:
        child: JsonDict = props[key]
        return child
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _is_non_nullable_null(value: Any, schema: JsonDict | None) -> bool:
    return value is None and schema is not None and not schema.get("nullable", False)


def prune_nulls(value: Any, schema: JsonDict | None) -> None:
    """Drop nulls of non-nullable fields that have no default (those get the default later)."""
    if isinstance(value, dict):
        for key in list(value):
            child = _child_schema(schema, key)
            if _is_non_nullable_null(value[key], child) and child is not None and "default" not in child:
                del value[key]
            else:
                prune_nulls(value[key], child)
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for item in value:
            prune_nulls(item, items)


def apply_defaults(value: Any, schema: JsonDict | None) -> None:
    """Set absent (or non-nullable null) fields to their default, then default inside them."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if "default" in prop and (key not in value or _is_non_nullable_null(value[key], prop)):
                value[key] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        for key in value:
            if key in schema.get("properties", {}):
                apply_defaults(value[key], schema["properties"][key])
            elif isinstance(additional, dict):
                if _is_non_nullable_null(value[key], additional) and "default" in additional:
                    value[key] = copy.deepcopy(additional["default"])
                apply_defaults(value[key], additional)
    elif isinstance(value, list):
        items = schema.get("items")
        for index, item in enumerate(value):
            if isinstance(items, dict) and _is_non_nullable_null(item, items) and "default" in items:
                value[index] = copy.deepcopy(items["default"])
            apply_defaults(value[index], items)


# ----------------------------------------------------------------------------- list types, CEL


def _walk(value: Any, schema: JsonDict | None, path: str) -> list[tuple[Any, JsonDict, str]]:
    """Every (value, schema node, path) pair of a defaulted object, parents first."""
    if schema is None or value is None:
        return []
    pairs = [(value, schema, path)]
    if isinstance(value, dict):
        for key, child in value.items():
            pairs += _walk(child, _child_schema(schema, key), f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            pairs += _walk(item, schema.get("items"), f"{path}[{index}]")
    return pairs


def check_list_types(value: Any, schema: JsonDict, path: str = "") -> list[str]:
    """Duplicate entries of `set` lists and duplicate keys of `map` lists, as the server reports."""
    errors: list[str] = []
    for node_value, node, node_path in _walk(value, schema, path):
        list_type = node.get("x-kubernetes-list-type")
        if not isinstance(node_value, list) or list_type not in ("map", "set"):
            continue
        seen: list[Any] = []
        for item in node_value:
            if list_type == "map" and isinstance(item, dict):
                identity: Any = [item.get(k) for k in node["x-kubernetes-list-map-keys"]]
            else:
                identity = item
            if identity in seen:
                errors.append(f"{node_path}: Duplicate value: {identity!r}")
            seen.append(identity)
    return errors


def evaluate_validations(
    value: Any, schema: JsonDict, path: str = "", evaluated: list[str] | None = None
) -> list[str]:
    """Messages of every failed `x-kubernetes-validations` rule anywhere in the object;
    `evaluated` (when given) collects the message of every rule evaluated, failed or not."""
    errors: list[str] = []
    for node_value, node, node_path in _walk(value, schema, path):
        for validation in node.get("x-kubernetes-validations", []):
            if evaluated is not None:
                evaluated.append(validation.get("message", validation["rule"]))
            passed, problem = evaluate_rule(validation["rule"], node_value)
            if not passed:
                message = validation.get("message") or f"failed rule: {validation['rule']}"
                errors.append(f"{node_path or '<root>'}: {message}" + (f" ({problem})" if problem else ""))
    return errors


# ----------------------------------------------------------------------------- admission


@dataclass
class Admission:
    """The verdict on one object, and the object as the server would store it."""

    stored: Any
    schema_errors: list[str] = field(default_factory=list)
    list_errors: list[str] = field(default_factory=list)
    cel_errors: list[str] = field(default_factory=list)
    cel_evaluated: list[str] = field(default_factory=list)  # messages of the rules that ran

    @property
    def errors(self) -> list[str]:
        return [*self.schema_errors, *self.list_errors, *self.cel_errors]

    @property
    def accepted(self) -> bool:
        return not self.errors


def admit_value(value: Any, schema: JsonDict, *, at_root: bool = True) -> Admission:
    """Prune nulls, default, then validate `value` against a schema node (an object or a part)."""
    stored = copy.deepcopy(value)
    if isinstance(stored, dict | list):
        prune_nulls(stored, schema)
        apply_defaults(stored, schema)
    validator = jsonschema.Draft202012Validator(to_jsonschema(schema, at_root=at_root))
    schema_errors = sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(stored)
    )
    evaluated: list[str] = []
    return Admission(
        stored=stored,
        schema_errors=schema_errors,
        list_errors=check_list_types(stored, schema),
        cel_errors=evaluate_validations(stored, schema, evaluated=evaluated),
        cel_evaluated=evaluated,
    )


def admit(crd: JsonDict, obj: JsonDict) -> Admission:
    """Whether the API server serving `crd` would accept `obj` on create."""
    return admit_value(obj, openapi_schema(crd))
