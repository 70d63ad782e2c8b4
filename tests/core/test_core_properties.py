"""Property tests: translation is deterministic and total on arbitrary valid-shaped input.

Inventories are drawn from a small name space so references hit, miss and collide often:
random routes, backends, gateways, secrets and invalid markers in random insertion order.
"""

from __future__ import annotations

import random
from typing import Any

from core_factories import backend, gateway, route, secret
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeway.render import render_all
from routeway.translate import Inventory, ObjectKey, translate

NAMES = st.sampled_from(["a", "b", "c", "d"])
NAMESPACES = st.sampled_from(["default", "team"])
TIMESTAMPS = st.one_of(st.none(), st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]))


@st.composite
def backends(draw: Any) -> Any:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["apiKeySecretRef"] = {"name": draw(NAMES), "key": draw(st.sampled_from(["k", "api-key"]))}
    if draw(st.booleans()):
        spec["model"] = draw(st.sampled_from(["m1", "m2"]))
    if draw(st.booleans()):
        spec["maxConcurrency"] = draw(st.integers(1, 100))
    return backend(draw(NAMES), draw(NAMESPACES), **spec)


@st.composite
def routes(draw: Any) -> Any:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    pairs = [(n, draw(st.integers(0, 100))) for n in names]
    spec: dict[str, Any] = {"model": draw(st.sampled_from(["chat", "embed", "code"]))}
    if draw(st.booleans()):
        spec["gatewayRef"] = {
            "name": draw(st.sampled_from(["default", "other"])),
            "namespace": draw(NAMESPACES),
        }
    if draw(st.booleans()):
        spec["fallbacks"] = [{"name": n} for n in draw(st.lists(NAMES, max_size=3))]
    if draw(st.booleans()):
        spec["stickiness"] = {"header": "x-session-id"}
    return route(draw(NAMES), pairs, draw(NAMESPACES), created=draw(TIMESTAMPS), **spec)


@st.composite
def gateways(draw: Any) -> Any:
    spec: dict[str, Any] = {}
    kind = draw(st.sampled_from(["Same", "All", "List"]))
    spec["allowedRoutes"] = {"namespaces": {"from": kind, "names": ["team"] if kind == "List" else []}}
    if draw(st.booleans()):
        spec["auth"] = {"apiKeySecretRef": {"name": draw(NAMES)}}
    return gateway(draw(st.sampled_from(["default", "other"])), draw(NAMESPACES), **spec)


@st.composite
def secrets(draw: Any) -> Any:
    keys = draw(st.lists(st.sampled_from(["k", "api-key", "x"]), max_size=3, unique=True))
    return secret(draw(NAMES), draw(NAMESPACES), **{k: "v" for k in keys})


OBJECTS = st.lists(st.one_of(backends(), routes(), gateways(), secrets()), max_size=25)
INVALID = st.lists(
    st.builds(ObjectKey, st.sampled_from(["ModelBackend", "ModelRoute", "ModelGateway"]), NAMESPACES, NAMES),
    max_size=3,
)


def snapshot(objects: list[Any], invalid: list[ObjectKey]) -> Any:
    t = translate(Inventory.from_objects(objects, {k: "invalid" for k in invalid}))
    configs = {k: v.to_json() for k, v in render_all(t).items()}
    return configs, dict(t.conditions), dict(t.attachments)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS, INVALID, st.randoms(use_true_random=False))
def test_translation_is_deterministic_and_total(
    objects: list[Any], invalid: list[ObjectKey], rnd: random.Random
) -> None:
    # Later duplicates replace earlier ones (as in a cluster: one object per key); the
    # shuffled copy must keep that same final set, so dedupe before shuffling.
    unique = list({(type(o).__name__, o.namespace, o.name): o for o in objects}.values())
    first = snapshot(unique, invalid)
    shuffled = unique[:]
    rnd.shuffle(shuffled)
    assert snapshot(shuffled, list(reversed(invalid))) == first


@settings(max_examples=100, deadline=None)
@given(OBJECTS)
def test_rendered_routes_only_name_rendered_backends_and_unique_models(objects: list[Any]) -> None:
    t = translate(Inventory.from_objects(objects))
    for config in render_all(t).values():
        ids = {b.id for b in config.backends}
        models = [r.model for r in config.routes]
        assert len(models) == len(set(models))
        for r in config.routes:
            assert {x.backend for x in (*r.targets, *r.fallbacks)} <= ids
            assert sum(x.weight for x in r.targets) >= 0
        assert config.revision and config.with_revision().revision == config.revision
