"""The offline API-server steps in crds_apiserver behave like the Go code they port.

Matrix (small hand-written schemas, so the behaviour is visible at a glance):
- null pruning: non-nullable null without default dropped; with default, defaulted; nullable
  null kept;
- defaulting: absent fields set, then defaulted inside (`default: {}` cascades), in list items
  and map values too;
- translation for jsonschema: unknown fields rejected where pruned, kept under
  preserve-unknown-fields and at root metadata; nullable; int-or-string; exclusive bounds;
- list types: duplicate map keys and set entries reported;
- CEL: false rule -> its message; evaluation error (missing key) -> rejection; `has()` on
  absent fields; macros over lists; Kubernetes' `isSorted()` on the examples of its docs;
  standard `duration()` on every form the Duration pattern admits, and its overflow.
"""

from __future__ import annotations

from typing import Any

import pytest
from crds_apiserver import admit_value, apply_defaults, evaluate_rule, prune_nulls

OBJ: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "size": {"type": "integer", "default": 3, "minimum": 0, "exclusiveMinimum": True},
        "note": {"type": "string", "nullable": True},
        "inner": {
            "type": "object",
            "default": {},
            "properties": {"mode": {"type": "string", "default": "fast", "enum": ["fast", "slow"]}},
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "weight": {"type": "integer", "default": 1}},
                "required": ["key"],
            },
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
        },
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "opaque": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "port": {"x-kubernetes-int-or-string": True},
    },
    "x-kubernetes-validations": [
        {"rule": "!has(self.name) || self.name != 'forbidden'", "message": "name is forbidden"},
        {"rule": "!has(self.items) || self.items.all(i, i.weight < 100)", "message": "weights below 100"},
    ],
}


def test_prune_nulls_follows_nullable_and_defaults() -> None:
    value: dict[str, Any] = {"name": None, "size": None, "note": None, "inner": {"mode": None}}
    prune_nulls(value, OBJ)
    assert value == {"size": None, "note": None, "inner": {"mode": None}}
    apply_defaults(value, OBJ)
    assert value == {"size": 3, "note": None, "inner": {"mode": "fast"}}


def test_defaults_cascade_into_defaulted_objects_and_list_items() -> None:
    value: dict[str, Any] = {"items": [{"key": "a"}, {"key": "b", "weight": 5}]}
    apply_defaults(value, OBJ)
    assert value == {
        "size": 3,
        "inner": {"mode": "fast"},
        "items": [{"key": "a", "weight": 1}, {"key": "b", "weight": 5}],
    }


def test_accepts_a_valid_object_and_stores_it_defaulted() -> None:
    admission = admit_value(
        {"name": "ok", "labels": {"a": "b"}, "opaque": {"any": {"thing": [1]}}, "port": "http", "note": None},
        OBJ,
        at_root=False,
    )
    assert admission.errors == []
    assert admission.stored["size"] == 3 and admission.stored["note"] is None


def test_unknown_fields_are_rejected_except_where_preserved() -> None:
    admission = admit_value({"nmae": "typo", "inner": {"speed": 1}}, OBJ, at_root=False)
    assert len(admission.schema_errors) == 2


def test_value_validations() -> None:
    for bad in ({"size": 0}, {"inner": {"mode": "medium"}}, {"port": 1.5}, {"labels": {"a": 1}}):
        assert not admit_value(bad, OBJ, at_root=False).accepted, bad
    assert admit_value({"size": 1, "port": 8080}, OBJ, at_root=False).accepted


def test_root_metadata_stays_open() -> None:
    root = {"type": "object", "properties": {"metadata": {"type": "object"}, "spec": OBJ}}
    value = {"metadata": {"name": "x", "labels": {"a": "b"}, "anything": 1}, "spec": {}}
    assert admit_value(value, root).accepted


def test_list_types_reject_duplicates() -> None:
    admission = admit_value({"items": [{"key": "a"}, {"key": "a"}], "tags": ["x", "x"]}, OBJ, at_root=False)
    assert len(admission.list_errors) == 2


def test_cel_rules_report_their_message() -> None:
    admission = admit_value({"name": "forbidden", "items": [{"key": "a", "weight": 100}]}, OBJ, at_root=False)
    assert admission.cel_errors == ["<root>: name is forbidden", "<root>: weights below 100"]


def test_cel_evaluation_errors_reject() -> None:
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "size(self.names) == 0", "message": "m"}],
    }
    admission = admit_value({}, schema, at_root=False)
    assert len(admission.cel_errors) == 1 and "names" in admission.cel_errors[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3], True), (["a", "b", "b", "c"], True), ([2.0, 1.0], False), ([1], True), ([], True)],
)
def test_is_sorted_behaves_like_the_kubernetes_list_library(values: list[Any], expected: bool) -> None:
    assert evaluate_rule("self.isSorted()", values) == (expected, None)


def test_is_sorted_after_filter_and_map() -> None:
    rule = "self.filter(s, has(s.w)).map(s, s.w).isSorted()"
    assert evaluate_rule(rule, [{"w": 10}, {"p": {}}, {"w": 10}, {"w": 50}]) == (True, None)
    assert evaluate_rule(rule, [{"w": 50}, {"p": {}}, {"w": 10}]) == (False, None)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("1.5s", 1.5), ("1h30m", 5400), ("0s", 0)])
def test_duration_reads_the_duration_pattern(text: str, seconds: float) -> None:
    assert evaluate_rule(f"duration(self) == duration('{int(seconds * 1000)}ms')", text) == (True, None)


def test_duration_overflow_is_an_evaluation_error() -> None:
    passed, problem = evaluate_rule("duration(self) <= duration('720h')", "99999999999999h")
    assert not passed and problem is not None
