"""Per-object last good versions (routeway.lastgood, issue 14 item 3).

Matrix, per kind and per kind of problem, each as "version 1 good, version 2 bad":
- ModelRoute: backends renamed to names that do not exist (the reported typo), a model name
  another route owns, all weights zero, a version that does not parse;
- ModelBackend: a Secret key that is not there (the route naming it keeps the backend's last
  good version and is not itself marked), a version that does not parse;
- ModelGateway: its client-key Secret missing; ModelClient: its key Secret missing;
- a first version that is broken is absent; a deleted object is gone (route and backend);
  an unchanged object whose problem comes from elsewhere keeps its problem (nothing better);
  a good edit becomes the new last good one; a fixed edit stops serving the older one;
- properties: no last good set is plain translation; the `good` set fed back is a fixed
  point; the order of the inputs does not matter; replaced objects are reported with their
  new version's problems and exist; only existing objects stay in the last good set.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core_factories import backend, client, gateway, route, secret
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from test_core_properties import INVALID, OBJECTS

from routeway import status as st
from routeway.lastgood import SERVING_LAST_GOOD, holders, translate_keeping_last_good
from routeway.proxyconfig import RouteConfig
from routeway.render import render, render_all
from routeway.resources import ModelRoute
from routeway.translate import Inventory, ObjectKey, Translation, translate

GW = ("default", "default")
CHAT = ObjectKey("ModelRoute", "default", "chat")
BACKEND_A = ObjectKey("ModelBackend", "default", "a")


def at(obj: Any, generation: int) -> Any:
    return obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"generation": generation})})


def run(
    *objects: Any, last: Translation | None = None, invalid: dict[ObjectKey, str] | None = None
) -> Translation:
    inventory = Inventory.from_objects(objects, invalid)
    return translate_keeping_last_good(inventory, last.good if last is not None else None)


def served_targets(t: Translation, model: str = "chat") -> list[tuple[str, int]]:
    config = render(t.gateways[GW])
    (served,) = [r for r in config.routes if r.model == model]
    return [(x.backend, x.weight) for x in served.targets]


def reasons(t: Translation, key: ObjectKey) -> list[str]:
    return [f.reason for f in t.findings[key]]


def test_route_typo_keeps_serving_the_last_good_version() -> None:
    good = run(gateway(), backend("a"), backend("b"), at(route("chat", [("a", 1), ("b", 3)]), 1))
    assert served_targets(good) == [("default/a", 1), ("default/b", 3)]
    typo = run(gateway(), backend("a"), backend("b"), at(route("chat", [("aa", 1), ("bb", 3)]), 2), last=good)
    assert served_targets(typo) == [("default/a", 1), ("default/b", 3)]
    assert typo.serving_older == {CHAT: 1}
    assert reasons(typo, CHAT)[:2] == [st.REASON_BACKEND_NOT_FOUND, st.REASON_BACKEND_NOT_FOUND]
    assert SERVING_LAST_GOOD in typo.findings[CHAT][-1].message
    resolved = dict((c.type, c) for c in typo.conditions[CHAT])[st.RESOLVED_REFS]
    assert resolved.status == "False" and "'aa'" in resolved.message and "generation 1" in resolved.message
    assert typo.good[CHAT].metadata.generation == 1
    # rendered as the good version, generation included: the operator's Programmed sees it
    assert render(typo.gateways[GW]).routes[0].generation == 1


def test_fixed_edit_is_served_and_becomes_the_last_good_version() -> None:
    good = run(gateway(), backend("a"), backend("b"), at(route("chat", [("a", 1)]), 1))
    typo = run(gateway(), backend("a"), backend("b"), at(route("chat", [("bb", 1)]), 2), last=good)
    fixed = run(gateway(), backend("a"), backend("b"), at(route("chat", [("b", 1)]), 3), last=typo)
    assert served_targets(fixed) == [("default/b", 1)]
    assert fixed.serving_older == {} and fixed.findings[CHAT] == ()
    assert fixed.good[CHAT].metadata.generation == 3


def test_model_conflict_and_zero_weights_keep_the_last_good_version() -> None:
    other = route("other", [("a", 1)], model="code", created="2026-01-01T00:00:00Z")
    mine = at(route("chat", [("a", 1)], created="2026-02-01T00:00:00Z"), 1)
    good = run(gateway(), backend("a"), other, mine)
    edit = route("chat", [("a", 1)], model="code", created="2026-02-01T00:00:00Z")
    conflict = run(gateway(), backend("a"), other, at(edit, 2), last=good)
    assert reasons(conflict, CHAT)[0] == st.REASON_MODEL_CONFLICT
    assert sorted(r.model for r in render(conflict.gateways[GW]).routes) == ["chat", "code"]
    zero = run(
        gateway(),
        backend("a"),
        other,
        at(route("chat", [("a", 0)], created="2026-02-01T00:00:00Z"), 3),
        last=good,
    )
    assert reasons(zero, CHAT)[0] == st.REASON_NO_WEIGHT
    assert served_targets(zero) == [("default/a", 1)]


def test_first_version_broken_is_absent_and_not_remembered() -> None:
    t = run(gateway(), backend("a"), route("chat", [("typo", 1)], model="chat"))
    assert served_targets(t) == []  # rendered without targets, as before: 503
    assert t.serving_older == {} and CHAT not in t.good
    assert ObjectKey("ModelRoute", "default", "chat") not in run(gateway(), invalid={CHAT: "bad"}).good


def test_route_that_does_not_parse_keeps_its_last_good_version() -> None:
    good = run(gateway(), backend("a"), at(route("chat", [("a", 2)]), 4))
    t = run(gateway(), backend("a"), last=good, invalid={CHAT: "spec.model: field required"})
    assert served_targets(t) == [("default/a", 2)]
    assert t.serving_older == {CHAT: 4} and reasons(t, CHAT)[0] == st.REASON_INVALID


def test_backend_missing_secret_key_keeps_its_last_good_version_for_its_routes() -> None:
    ref = {"name": "creds", "key": "api-key"}
    new_ref = {"name": "creds", "key": "api-kee"}
    keys = secret("creds", **{"api-key": "sk-1"})
    good = run(gateway(), keys, at(backend("a", apiKeySecretRef=ref), 1), route("chat", [("a", 1)]))
    bad = run(
        gateway(), keys, at(backend("a", apiKeySecretRef=new_ref), 2), route("chat", [("a", 1)]), last=good
    )
    assert bad.serving_older == {BACKEND_A: 1}
    assert reasons(bad, BACKEND_A)[0] == st.REASON_SECRET_KEY_NOT_FOUND
    assert bad.findings[CHAT] == ()  # the route resolves to the backend's last good version
    config = render(bad.gateways[GW])
    assert [b.credential_ref for b in config.backends] == ["default/creds/api-key"]


def test_backend_that_does_not_parse_keeps_its_last_good_version() -> None:
    good = run(gateway(), at(backend("a", model="m1"), 3), route("chat", [("a", 1)]))
    bad = run(gateway(), route("chat", [("a", 1)]), last=good, invalid={BACKEND_A: "bad url"})
    assert served_targets(bad) == [("default/a", 1)] and bad.serving_older == {BACKEND_A: 3}
    assert render(bad.gateways[GW]).routes[0].targets[0].model == "m1"


def test_gateway_and_client_missing_secrets_keep_their_last_good_versions() -> None:
    gw_key = ObjectKey("ModelGateway", "default", "default")
    team = ObjectKey("ModelClient", "default", "team")
    objects = [
        backend("a"),
        route("chat", [("a", 1)]),
        secret("keys", k="v"),
        secret("team-key", **{"api-key": "c"}),
    ]
    good = run(gateway(auth={"apiKeySecretRef": {"name": "keys"}}), client("team"), *objects)
    assert render(good.gateways[GW]).gateway.client_key_refs == ("default/keys/k",)
    bad = run(
        gateway(auth={"apiKeySecretRef": {"name": "kyes"}}),
        client("team", keySecretRef={"name": "team-kye", "key": "api-key"}),
        *objects,
        last=good,
    )
    assert set(bad.serving_older) == {gw_key, team}
    config = render(bad.gateways[GW])
    assert config.gateway.client_key_refs == ("default/keys/k",)
    assert [c.key_ref for c in config.gateway.clients] == ["default/team-key/api-key"]


def test_deleted_objects_are_gone() -> None:
    good = run(gateway(), backend("a"), backend("b"), route("chat", [("a", 1), ("b", 1)]))
    without_route = run(gateway(), backend("a"), backend("b"), last=good)
    assert CHAT not in without_route.good and render(without_route.gateways[GW]).routes == ()
    # the backend is deleted, the route unchanged: it loses that backend, as before
    without_b = run(gateway(), backend("a"), route("chat", [("a", 1), ("b", 1)]), last=good)
    assert served_targets(without_b) == [("default/a", 1)]
    assert without_b.serving_older == {} and reasons(without_b, CHAT) == [st.REASON_BACKEND_NOT_FOUND]
    assert ObjectKey("ModelBackend", "default", "b") not in without_b.good


def test_unchanged_object_with_a_problem_from_elsewhere_reports_it() -> None:
    good = run(gateway(), backend("a"), route("chat", [("a", 1)]))
    t = run(gateway(), route("chat", [("a", 1)]), last=good)  # backend deleted
    assert t.serving_older == {} and reasons(t, CHAT) == [st.REASON_BACKEND_NOT_FOUND]
    assert t.good[CHAT] == good.good[CHAT]  # still its last good version, for when a is back


# ---------------------------------------------------------------------------- properties


def _unique(objects: list[Any]) -> list[Any]:
    return list({(type(o).__name__, o.namespace, o.name): o for o in objects}.values())


def _snapshot(t: Translation) -> Any:
    configs = {k: v.to_json() for k, v in render_all(t).items()}
    return configs, dict(t.conditions), dict(t.attachments), dict(t.serving_older), dict(t.good)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS, OBJECTS, INVALID, hst.randoms(use_true_random=False))
def test_last_good_properties(
    before: list[Any], after: list[Any], invalid: list[ObjectKey], rnd: random.Random
) -> None:
    first = translate_keeping_last_good(Inventory.from_objects(_unique(before)))
    plain = translate(Inventory.from_objects(_unique(before)))
    assert render_all(first) == render_all(plain) and first.serving_older == {}

    objects = _unique(before + after)  # the second snapshot edits, adds and keeps objects
    inv = Inventory.from_objects(objects, {k: "invalid" for k in invalid})
    second = translate_keeping_last_good(inv, first.good)
    unfiltered = translate(replace(inv, holders=holders(first.good)))  # who serves keeps its names
    for key, generation in second.serving_older.items():
        assert unfiltered.findings[key], key  # only a version with a problem is replaced
        assert second.good[key] is first.good[key] and generation == first.good[key].metadata.generation
        assert any(SERVING_LAST_GOOD in f.message for f in second.findings[key])
    existing = set(unfiltered.findings)
    assert set(second.good) <= existing  # deleted objects drop out
    for key, obj in second.good.items():
        # a new version becomes good only without findings in the translation that serves it
        # (a route is judged against its backends' last good versions, not the new ones)
        assert obj is first.good.get(key) or not second.findings[key]

    # fed back, the last good set changes nothing: it is a fixed point
    again = translate_keeping_last_good(inv, second.good)
    assert _snapshot(again) == _snapshot(second)

    # the order objects arrive in does not matter
    shuffled = objects[:]
    rnd.shuffle(shuffled)
    reordered = Inventory.from_objects(shuffled, {k: "invalid" for k in reversed(invalid)})
    assert _snapshot(
        translate_keeping_last_good(reordered, dict(reversed(list(first.good.items()))))
    ) == _snapshot(second)


def test_a_route_left_out_by_its_gateway_is_not_served_from_an_older_version() -> None:
    """The gateway's own edit (routes of another namespace no longer allowed) applies: the
    route's version did not change, so there is nothing older to serve."""
    team = route("chat", [("a", 1)], namespace="team", gatewayRef={"name": "default", "namespace": "default"})
    allow_all = gateway(allowedRoutes={"namespaces": {"from": "All"}})
    good = run(allow_all, backend("a", "team"), team)
    closed = run(gateway(), backend("a", "team"), team, last=good)
    key = ObjectKey("ModelRoute", "team", "chat")
    assert reasons(closed, key) == [st.REASON_NOT_ALLOWED] and closed.serving_older == {}
    assert render(closed.gateways[GW]).routes == ()


def test_good_holds_parsed_models() -> None:
    t = run(gateway(), backend("a"), route("chat", [("a", 1)]))
    assert isinstance(t.good[CHAT], ModelRoute)
    assert replace(t, good={}).good == {}


def test_route_edited_with_its_backend_is_judged_against_the_backends_last_good_version() -> None:
    """Backends settle before routes: a good route edit made together with a bad backend edit
    is served (with the backend's last good version), not rolled back itself."""
    ref = {"name": "creds", "key": "api-key"}
    keys = secret("creds", **{"api-key": "sk-1"})
    good = run(gateway(), keys, at(backend("a", apiKeySecretRef=ref), 1), at(route("chat", [("a", 1)]), 1))
    bad_backend = backend("a", apiKeySecretRef={"name": "nope", "key": "api-key"})
    both = run(gateway(), keys, at(bad_backend, 2), at(route("chat", [("a", 5)]), 2), last=good)
    assert both.serving_older == {BACKEND_A: 1}
    assert served_targets(both) == [("default/a", 5)] and both.good[CHAT].metadata.generation == 2


@dataclass(frozen=True)
class Seen:
    """A route as the operator last saw it (routeway.status.Observed)."""

    generation: int | None = 2
    status: Mapping[str, Any] = field(default_factory=dict)


def test_route_status_programmed_at_the_older_generation_it_serves() -> None:
    """routeway.status: a route whose newest generation (2) has a problem is programmed at the
    generation it serves (1), not left Pending for a render that will never come."""
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Seen:
        generation: int | None = 2
        status: Mapping[str, Any] = field(default_factory=dict)

    rendered = RouteConfig.model_validate(
        {
            "id": "default/chat",
            "namespace": "default",
            "name": "chat",
            "model": "chat",
            "generation": 1,
            "targets": [{"backend": "default/a", "model": "chat", "weight": 1}],
            "retries": {"attempts": 1},
        }
    )
    applied = st.Outcome("rev", st.programmed("rev", "is applied"))
    problem = [
        st.Condition(st.ACCEPTED, "True", st.REASON_ACCEPTED),
        st.Condition(st.RESOLVED_REFS, "False", "BackendNotFound", "x"),
    ]
    doc = st.route_status(Seen(), problem, GW, rendered, applied, "2026-01-01T00:00:00Z", serving=1)
    programmed = {c["type"]: c for c in doc["conditions"]}[st.PROGRAMMED]
    assert programmed["status"] == "True" and "generation 1 (the last good one)" in programmed["message"]
    assert doc["observedGeneration"] == 2 and doc["backendWeights"] == "a=1"
    pending = st.route_status(Seen(), problem, GW, rendered, applied, "2026-01-01T00:00:00Z")
    assert {c["type"]: c for c in pending["conditions"]}[st.PROGRAMMED]["reason"] == st.REASON_PENDING
