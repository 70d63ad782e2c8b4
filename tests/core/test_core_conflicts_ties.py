"""Conflicts between objects of several namespaces: one deterministic winner, documented rule.

The rule (README "Attachment rule", translate.py): of the routes one gateway accepts that claim
one public model, the one with the oldest creationTimestamp keeps it; equal timestamps (common:
a GitOps tool applies many objects in the same second) fall to namespace, then name. Matrix:
equal timestamps across namespaces (namespace decides, whatever order the inventory was filled
in; the rendered config is byte-identical), equal timestamps in one namespace (name decides),
an older timestamp beating a namespace that sorts first, three claimants; the losers are
`Accepted=False` `ModelNameConflict` naming the winner and its gateway, are not attached and
are absent from the config; with the winner gone the next in order wins. Neighbours: a route
that the gateway does not accept (namespace not allowed, all weights 0) claims nothing, so it
never makes a later route lose; the same model on two gateways is no conflict; backends of the
same name in two namespaces stay apart (each route gets its own namespace's backend).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from core_factories import backend, gateway, route

from routeway import status as c
from routeway.render import render_all
from routeway.resources import ModelRoute
from routeway.translate import Inventory, ObjectKey, Translation, translate

SECOND = "2026-03-01T10:00:00Z"
EARLIER = "2026-03-01T09:59:59Z"
SHARED = ("infra", "shared")
OPEN_GATEWAY = gateway("shared", "infra", allowedRoutes={"namespaces": {"from": "All"}})


def run(*objects: Any) -> Translation:
    return translate(Inventory.from_objects(objects))


def claimant(name: str, namespace: str, created: str | None = SECOND, **spec: Any) -> ModelRoute:
    return route(
        name,
        namespace=namespace,
        created=created,
        model=spec.pop("model", "chat"),
        gatewayRef={"name": "shared", "namespace": "infra"},
        **spec,
    )


def served(t: Translation, gw: tuple[str, str] = SHARED) -> dict[str, str]:
    """Public model → the id of the route serving it."""
    return {r.route.spec.model: f"{r.route.namespace}/{r.route.name}" for r in t.gateways[gw].routes}


def accepted(t: Translation, namespace: str, name: str) -> c.Condition:
    return {x.type: x for x in t.conditions[ObjectKey("ModelRoute", namespace, name)]}["Accepted"]


def assert_lost_to(t: Translation, namespace: str, name: str, winner: str) -> None:
    lost = accepted(t, namespace, name)
    assert (lost.status, lost.reason) == ("False", c.REASON_MODEL_CONFLICT)
    assert f"by ModelRoute {winner}" in lost.message and "gateway infra/shared" in lost.message
    assert ObjectKey("ModelRoute", namespace, name) not in t.attachments


def rendered(t: Translation) -> bytes:
    return orjson.dumps({str(k): v.model_dump(mode="json") for k, v in render_all(t).items()})


def test_equal_timestamps_across_namespaces_fall_to_the_namespace_in_any_input_order() -> None:
    rest = [OPEN_GATEWAY, backend("a", "team-b"), backend("a", "team-a"), backend("a", "team-c")]
    claimants = [claimant("chat", "team-b"), claimant("chat", "team-a"), claimant("chat", "team-c")]
    outputs = set()
    for order in itertools.permutations(claimants):
        t = run(*order, *rest)
        assert served(t) == {"chat": "team-a/chat"}
        assert accepted(t, "team-a", "chat").ok
        assert_lost_to(t, "team-b", "chat", "team-a/chat")
        assert_lost_to(t, "team-c", "chat", "team-a/chat")
        outputs.add(rendered(t))
    assert len(outputs) == 1  # byte-identical whatever the order


def test_equal_timestamps_in_one_namespace_fall_to_the_name() -> None:
    t = run(OPEN_GATEWAY, backend("a", "team"), claimant("zeta", "team"), claimant("alpha", "team"))
    assert served(t) == {"chat": "team/alpha"}
    assert_lost_to(t, "team", "zeta", "team/alpha")


def test_an_older_timestamp_beats_a_namespace_that_sorts_first() -> None:
    t = run(
        OPEN_GATEWAY,
        backend("a", "aaa"),
        backend("a", "zzz"),
        claimant("chat", "aaa", SECOND),
        claimant("chat", "zzz", EARLIER),
    )
    assert served(t) == {"chat": "zzz/chat"}
    assert_lost_to(t, "aaa", "chat", "zzz/chat")


def test_with_the_winner_gone_the_next_in_order_wins() -> None:
    others = [backend("a", ns) for ns in ("team-a", "team-b", "team-c")]
    t = run(OPEN_GATEWAY, *others, claimant("chat", "team-b"), claimant("chat", "team-c"))
    assert served(t) == {"chat": "team-b/chat"}
    assert accepted(t, "team-b", "chat").ok
    assert_lost_to(t, "team-c", "chat", "team-b/chat")


def test_a_route_the_gateway_does_not_accept_claims_nothing() -> None:
    listed = gateway("shared", "infra", allowedRoutes={"namespaces": {"from": "List", "names": ["team-b"]}})
    t = run(
        listed,
        backend("a", "team-a"),
        backend("a", "team-b"),
        claimant("chat", "team-a", EARLIER),  # older, but its namespace is not allowed
        claimant("chat", "team-b", SECOND),
    )
    assert served(t) == {"chat": "team-b/chat"}
    assert accepted(t, "team-a", "chat").reason == c.REASON_NOT_ALLOWED
    assert accepted(t, "team-b", "chat").ok
    t = run(
        OPEN_GATEWAY,
        backend("a", "team-a"),
        backend("a", "team-b"),
        claimant("chat", "team-a", EARLIER, backends=[("a", 0)]),  # could serve nothing
        claimant("chat", "team-b", SECOND),
    )
    assert served(t) == {"chat": "team-b/chat"}
    assert accepted(t, "team-a", "chat").reason == c.REASON_NO_WEIGHT


def test_the_same_model_on_two_gateways_with_equal_timestamps_is_no_conflict() -> None:
    t = run(
        OPEN_GATEWAY,
        gateway("other", "infra", allowedRoutes={"namespaces": {"from": "All"}}),
        backend("a", "team-a"),
        backend("a", "team-b"),
        claimant("chat", "team-b"),
        route("chat", namespace="team-a", created=SECOND, gatewayRef={"name": "other", "namespace": "infra"}),
    )
    assert served(t) == {"chat": "team-b/chat"}
    assert served(t, ("infra", "other")) == {"chat": "team-a/chat"}
    assert accepted(t, "team-a", "chat").ok and accepted(t, "team-b", "chat").ok


def test_backends_of_one_name_in_two_namespaces_stay_apart() -> None:
    t = run(
        OPEN_GATEWAY,
        backend("llm", "team-a", url="http://a.example:8000/v1"),
        backend("llm", "team-b", url="http://b.example:8000/v1"),
        claimant("one", "team-a", model="one", backends=[("llm", 1)]),
        claimant("two", "team-b", model="two", backends=[("llm", 1)]),
    )
    config = render_all(t)[SHARED]
    assert {b.id: b.url for b in config.backends} == {
        "team-a/llm": "http://a.example:8000/v1",
        "team-b/llm": "http://b.example:8000/v1",
    }
    assert {r.model: [x.backend for x in r.targets] for r in config.routes} == {
        "one": ["team-a/llm"],
        "two": ["team-b/llm"],
    }


def test_the_namespace_decides_before_the_name() -> None:
    t = run(
        OPEN_GATEWAY,
        backend("a", "team-a"),
        backend("a", "team-b"),
        claimant("aaa-first-name", "team-b"),
        claimant("zzz-last-name", "team-a"),
    )
    assert served(t) == {"chat": "team-a/zzz-last-name"}
    assert_lost_to(t, "team-b", "aaa-first-name", "team-a/zzz-last-name")


def test_gateways_of_one_name_in_two_namespaces_take_their_own_routes() -> None:
    """A gatewayRef without a namespace means the route's own namespace, never another
    namespace's gateway of that name, whichever sorts first."""
    t = run(
        OPEN_GATEWAY,
        gateway("shared", "team", allowedRoutes={"namespaces": {"from": "All"}}),
        backend("a", "team"),
        route("chat", namespace="team", created=SECOND, gatewayRef={"name": "shared"}),
        route(
            "other",
            namespace="team",
            created=SECOND,
            model="other",
            gatewayRef={"name": "shared", "namespace": "infra"},
        ),
    )
    assert served(t, ("team", "shared")) == {"chat": "team/chat"}
    assert served(t) == {"other": "team/other"}
    assert t.attachments[ObjectKey("ModelRoute", "team", "chat")] == ("team", "shared")
