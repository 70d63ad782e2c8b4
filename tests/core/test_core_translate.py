"""Every translation rule and error, one test each.

Matrix: attachment (default gateway, explicit ref, cross-namespace Same/All/List, missing,
invalid), backends (resolved, missing, invalid, unresolved secret, missing secret key, zero
weight, upstream model default/override), fallbacks, model-name conflicts (oldest wins,
name order without timestamps), all-zero weights, gateway auth (keys listed, fail closed),
isolation (one invalid object never removes another's routes), conditions summary; the
progressive-delivery fields (issue 12) are validated but change nothing rendered yet.
"""

from __future__ import annotations

from core_factories import backend, gateway, route, secret

from routeway import status as c
from routeway.render import render_all
from routeway.translate import Inventory, ObjectKey, Translation, translate


def run(*objects, invalid=None) -> Translation:  # type: ignore[no-untyped-def]
    return translate(Inventory.from_objects(objects, invalid))


def cond(t: Translation, kind: str, name: str, ctype: str, namespace: str = "default") -> c.Condition:
    return {x.type: x for x in t.conditions[ObjectKey(kind, namespace, name)]}[ctype]


def routes_of(
    t: Translation, gw: tuple[str, str] = ("default", "default")
) -> dict[str, list[tuple[str, str, int]]]:
    return {
        r.route.spec.model: [(x.backend.name, x.model, x.weight) for x in r.targets]
        for r in t.gateways[gw].routes
    }


def test_route_attaches_to_default_gateway_and_resolves():
    t = run(gateway(), backend("a"), backend("b", model="llama-3"), route("chat", [("a", 90), ("b", 10)]))
    assert routes_of(t) == {"chat": [("a", "chat", 90), ("b", "llama-3", 10)]}
    assert cond(t, "ModelRoute", "chat", "Accepted").ok
    assert cond(t, "ModelRoute", "chat", "ResolvedRefs").ok
    assert t.attachments[ObjectKey("ModelRoute", "default", "chat")] == ("default", "default")


def test_explicit_gateway_ref_in_other_namespace_needs_permission():
    gw_all = gateway("shared", "infra", allowedRoutes={"namespaces": {"from": "All"}})
    t = run(
        gw_all,
        backend("a", "team"),
        route("chat", namespace="team", gatewayRef={"name": "shared", "namespace": "infra"}),
    )
    assert routes_of(t, ("infra", "shared")) == {"chat": [("a", "chat", 1)]}

    gw_same = gateway("shared", "infra")
    t = run(
        gw_same,
        backend("a", "team"),
        route("chat", namespace="team", gatewayRef={"name": "shared", "namespace": "infra"}),
    )
    accepted = cond(t, "ModelRoute", "chat", "Accepted", "team")
    assert (accepted.status, accepted.reason) == ("False", c.REASON_NOT_ALLOWED)
    assert "namespace team" in accepted.message
    assert t.gateways[("infra", "shared")].routes == ()


def test_list_of_namespaces():
    gw = gateway("shared", "infra", allowedRoutes={"namespaces": {"from": "List", "names": ["team-a"]}})
    ref = {"name": "shared", "namespace": "infra"}
    t = run(
        gw,
        backend("a", "team-a"),
        backend("a", "team-b"),
        route("one", namespace="team-a", gatewayRef=ref),
        route("two", namespace="team-b", gatewayRef=ref),
    )
    assert set(routes_of(t, ("infra", "shared"))) == {"one"}
    assert cond(t, "ModelRoute", "two", "Accepted", "team-b").reason == c.REASON_NOT_ALLOWED


def test_missing_gateway_and_invalid_gateway():
    t = run(backend("a"), route("chat", gatewayRef={"name": "nope"}))
    accepted = cond(t, "ModelRoute", "chat", "Accepted")
    assert (accepted.status, accepted.reason) == ("False", c.REASON_GATEWAY_NOT_FOUND)
    assert cond(t, "ModelRoute", "chat", "ResolvedRefs").status == "Unknown"

    t = run(backend("a"), route("chat"), invalid={ObjectKey("ModelGateway", "default", "default"): "bad"})
    assert cond(t, "ModelRoute", "chat", "Accepted").reason == c.REASON_GATEWAY_INVALID
    assert cond(t, "ModelGateway", "default", "Accepted").reason == c.REASON_INVALID


def test_missing_backend_is_dropped_and_reported_others_still_route():
    t = run(gateway(), backend("a"), route("chat", [("a", 50), ("ghost", 50)]))
    assert routes_of(t) == {"chat": [("a", "chat", 50)]}
    resolved = cond(t, "ModelRoute", "chat", "ResolvedRefs")
    assert (resolved.status, resolved.reason) == ("False", c.REASON_BACKEND_NOT_FOUND)
    assert "'ghost'" in resolved.message
    assert cond(t, "ModelRoute", "chat", "Accepted").ok  # the spec itself is fine
    finding = t.findings[ObjectKey("ModelRoute", "default", "chat")][0]
    assert finding.field == "spec.backends[1].name"


def test_invalid_backend_named_as_such():
    t = run(
        gateway(), route("chat", [("a", 1)]), invalid={ObjectKey("ModelBackend", "default", "a"): "url: bad"}
    )
    assert cond(t, "ModelRoute", "chat", "ResolvedRefs").reason == c.REASON_BACKEND_INVALID
    assert routes_of(t) == {"chat": []}


def test_backend_secret_missing_or_key_missing():
    ref = {"name": "creds", "key": "api-key"}
    t = run(gateway(), backend("a", apiKeySecretRef=ref), route("chat"))
    b = cond(t, "ModelBackend", "a", "ResolvedRefs")
    assert (b.status, b.reason) == ("False", c.REASON_SECRET_NOT_FOUND)
    assert cond(t, "ModelRoute", "chat", "ResolvedRefs").reason == c.REASON_BACKEND_UNRESOLVED

    t = run(gateway(), secret("creds", other="x"), backend("a", apiKeySecretRef=ref), route("chat"))
    assert cond(t, "ModelBackend", "a", "ResolvedRefs").reason == c.REASON_SECRET_KEY_NOT_FOUND

    t = run(
        gateway(), secret("creds", **{"api-key": "sk-1"}), backend("a", apiKeySecretRef=ref), route("chat")
    )
    assert cond(t, "ModelBackend", "a", "ResolvedRefs").ok
    assert routes_of(t) == {"chat": [("a", "chat", 1)]}


def test_secret_in_other_namespace_does_not_count():
    ref = {"name": "creds", "key": "k"}
    t = run(gateway(), secret("creds", "elsewhere", k="v"), backend("a", apiKeySecretRef=ref), route("chat"))
    assert cond(t, "ModelBackend", "a", "ResolvedRefs").reason == c.REASON_SECRET_NOT_FOUND


def test_fallbacks_resolved_in_order_and_missing_reported():
    t = run(
        gateway(),
        backend("a"),
        backend("b"),
        backend("c"),
        route("chat", [("a", 1)], fallbacks=[{"name": "c"}, {"name": "zz"}, {"name": "b"}]),
    )
    ir = t.gateways[("default", "default")].routes[0]
    assert [f.backend.name for f in ir.fallbacks] == ["c", "b"]
    finding = t.findings[ObjectKey("ModelRoute", "default", "chat")][0]
    assert (finding.reason, finding.field) == (c.REASON_BACKEND_NOT_FOUND, "spec.fallbacks[1].name")


def test_all_weights_zero_is_not_accepted():
    t = run(gateway(), backend("a"), backend("b"), route("chat", [("a", 0), ("b", 0)]))
    accepted = cond(t, "ModelRoute", "chat", "Accepted")
    assert (accepted.status, accepted.reason) == ("False", c.REASON_NO_WEIGHT)
    assert routes_of(t) == {}


def test_zero_weight_target_kept_with_zero_share():
    t = run(gateway(), backend("a"), backend("b"), route("chat", [("a", 1), ("b", 0)]))
    assert routes_of(t) == {"chat": [("a", "chat", 1), ("b", "chat", 0)]}


def test_model_conflict_oldest_wins():
    t = run(
        gateway(),
        backend("a"),
        route("newer", model="chat", created="2026-01-02T00:00:00Z"),
        route("older", model="chat", created="2026-01-01T00:00:00Z"),
    )
    assert [r.route.name for r in t.gateways[("default", "default")].routes] == ["older"]
    lost = cond(t, "ModelRoute", "newer", "Accepted")
    assert (lost.status, lost.reason) == ("False", c.REASON_MODEL_CONFLICT)
    assert "default/older" in lost.message
    assert ObjectKey("ModelRoute", "default", "newer") not in t.attachments


def test_model_conflict_without_timestamps_uses_names():
    t = run(gateway(), backend("a"), route("b-route", model="chat"), route("a-route", model="chat"))
    assert [r.route.name for r in t.gateways[("default", "default")].routes] == ["a-route"]


def test_same_model_on_two_gateways_is_no_conflict():
    t = run(
        gateway("one"),
        gateway("two"),
        backend("a"),
        route("r1", model="chat", gatewayRef={"name": "one"}),
        route("r2", model="chat", gatewayRef={"name": "two"}),
    )
    assert set(routes_of(t, ("default", "one"))) == {"chat"}
    assert set(routes_of(t, ("default", "two"))) == {"chat"}


def test_invalid_route_does_not_poison_others():
    t = run(
        gateway(),
        backend("a"),
        route("good"),
        invalid={ObjectKey("ModelRoute", "default", "bad"): "spec.backends: field required"},
    )
    assert set(routes_of(t)) == {"good"}
    bad = cond(t, "ModelRoute", "bad", "Accepted")
    assert (bad.status, bad.reason, bad.message) == (
        "False",
        c.REASON_INVALID,
        "spec.backends: field required",
    )


def test_gateway_auth_lists_every_key_and_fails_closed_without_secret():
    t = run(
        gateway(auth={"apiKeySecretRef": {"name": "client-keys"}}),
        secret("client-keys", team1="k1", team2="k2"),
    )
    ir = t.gateways[("default", "default")]
    assert ir.client_key_refs == ("default/client-keys/team1", "default/client-keys/team2")
    assert ir.require_client_key

    t = run(gateway(auth={"apiKeySecretRef": {"name": "client-keys"}}))
    ir = t.gateways[("default", "default")]
    assert (ir.client_key_refs, ir.require_client_key) == ((), True)
    assert cond(t, "ModelGateway", "default", "ResolvedRefs").reason == c.REASON_SECRET_NOT_FOUND


def test_open_gateway_needs_no_key():
    ir = run(gateway()).gateways[("default", "default")]
    assert (ir.client_key_refs, ir.require_client_key) == ((), False)


def test_every_object_gets_both_conditions():
    t = run(gateway(), backend("a"), route("chat"))
    for key, conds in t.conditions.items():
        assert [x.type for x in conds] == ["Accepted", "ResolvedRefs"], key


def test_several_findings_are_all_in_the_message():
    t = run(gateway(), route("chat", [("x", 1), ("y", 1)]))
    msg = cond(t, "ModelRoute", "chat", "ResolvedRefs").message
    assert "'x'" in msg and "'y'" in msg


def test_rollout_fields_change_nothing_rendered_yet():
    """Until the rollout is wired, a strategy and the route's rollout limits are only validated."""
    plain = run(backend("a"), backend("b"), route("chat", [("a", 1), ("b", 3)]))
    with_strategy = run(
        backend("a"),
        backend("b"),
        route(
            "chat",
            [("a", 1), ("b", 3)],
            strategy={
                "canary": {
                    "steps": [{"setWeight": 10}, {"pause": {}}],
                    "analysis": {"metrics": [{"name": "errorRate", "max": 0.02}]},
                }
            },
            revisionHistoryLimit=3,
            paused=True,
            progressDeadline="1h",
        ),
    )
    assert render_all(with_strategy) == render_all(plain)
    assert with_strategy.conditions == plain.conditions
