"""A served public model name cannot be taken over (issue 14; SECURITY.md).

The route serving a (gateway, model) keeps it against any other claimant: an edit of an older
route, a new route whose name sorts first (local files carry no creationTimestamp), a route in
another namespace of an `allowedRoutes: All` gateway. The newcomer is the one in conflict and
falls back to its last good version, or is absent without one. Age decides only when no
claimant is serving (first load). Property: no edit, addition or deletion of a route X changes
which backends serve a model another route Y serves, unless Y itself changes.
"""

from __future__ import annotations

from typing import Any

from core_factories import backend, gateway, route
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from test_core_lastgood import GW, at, run

from routeway import status as st
from routeway.render import render
from routeway.translate import ObjectKey, Translation

OLD, YOUNG = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


def served(t: Translation, gw: tuple[str, str] = GW) -> dict[str, tuple[str, list[str]]]:
    """model → (route, backends) as rendered."""
    return {r.model: (r.id, sorted(x.backend for x in r.targets)) for r in render(t.gateways[gw]).routes}


def reasons(t: Translation, namespace: str, name: str) -> list[str]:
    return [f.reason for f in t.findings[ObjectKey("ModelRoute", namespace, name)]]


def test_an_older_routes_edit_cannot_take_a_served_name() -> None:
    old = at(route("old", [("a", 1)], model="code", created=OLD), 1)
    young = at(route("young", [("b", 1)], model="chat", created=YOUNG), 1)
    good = run(gateway(), backend("a"), backend("b"), old, young)
    assert served(good)["chat"] == ("default/young", ["default/b"])
    steal = at(route("old", [("a", 1)], model="chat", created=OLD), 2)
    t = run(gateway(), backend("a"), backend("b"), steal, young, last=good)
    assert served(t) == {"chat": ("default/young", ["default/b"]), "code": ("default/old", ["default/a"])}
    assert reasons(t, "default", "old")[0] == st.REASON_MODEL_CONFLICT
    assert reasons(t, "default", "young") == []
    assert t.serving_older == {ObjectKey("ModelRoute", "default", "old"): 1}


def test_a_new_route_whose_name_sorts_first_cannot_take_a_served_name() -> None:
    z = route("z-chat", [("a", 1)], model="gpt")  # local files: no creationTimestamp
    good = run(gateway(), backend("a"), backend("evil"), z)
    newcomer = route("a-chat", [("evil", 1)], model="gpt")
    t = run(gateway(), backend("a"), backend("evil"), z, newcomer, last=good)
    assert served(t) == {"gpt": ("default/z-chat", ["default/a"])}
    assert reasons(t, "default", "a-chat") == [st.REASON_MODEL_CONFLICT]
    assert ObjectKey("ModelRoute", "default", "a-chat") not in t.good  # absent: no last good version


def test_another_namespace_cannot_take_a_served_name_on_a_shared_gateway() -> None:
    shared = gateway(allowedRoutes={"namespaces": {"from": "All"}})
    victim = route(
        "chat",
        [("b", 1)],
        namespace="team-b",
        created=YOUNG,
        model="chat",
        gatewayRef={"name": "default", "namespace": "default"},
    )
    attacker = route(
        "x",
        [("a", 1)],
        namespace="team-a",
        created=OLD,
        model="other",
        gatewayRef={"name": "default", "namespace": "default"},
    )
    objects = [shared, backend("a", namespace="team-a"), backend("b", namespace="team-b")]
    good = run(*objects, victim, at(attacker, 1))
    edit = at(
        route(
            "x",
            [("a", 1)],
            namespace="team-a",
            created=OLD,
            model="chat",
            gatewayRef={"name": "default", "namespace": "default"},
        ),
        2,
    )
    t = run(*objects, victim, edit, last=good)
    assert served(t)["chat"] == ("team-b/chat", ["team-b/b"])
    assert served(t)["other"] == ("team-a/x", ["team-a/a"])  # its last good version


def test_a_released_name_goes_to_the_claimant_and_age_decides_only_without_a_holder() -> None:
    old = route("old", [("a", 1)], model="code", created=OLD)
    young = route("young", [("b", 1)], model="chat", created=YOUNG)
    first = run(
        gateway(), backend("a"), backend("b"), route("old", [("a", 1)], model="chat", created=OLD), young
    )
    assert served(first)["chat"][0] == "default/old"  # first load: the older one wins
    moved = run(gateway(), backend("a"), backend("b"), old, young, last=first)  # old lets chat go
    assert served(moved) == {"chat": ("default/young", ["default/b"]), "code": ("default/old", ["default/a"])}
    deleted = run(gateway(), backend("a"), backend("b"), route("z", [("a", 1)], model="chat"), last=moved)
    assert served(deleted)["chat"] == ("default/z", ["default/a"])  # the holder is gone


MODELS = ("chat", "code", "embed")
BACKENDS = ("a", "b", "c")
NAMES = ("r0", "r1", "r2", "r3")


@hst.composite
def route_sets(draw: Any) -> dict[str, Any]:
    names = draw(hst.lists(hst.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    return {
        n: route(
            n,
            [(draw(hst.sampled_from(BACKENDS)), 1)],
            model=draw(hst.sampled_from(MODELS)),
            created=draw(hst.sampled_from((None, OLD, YOUNG))),
        )
        for n in names
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route_sets(),
    hst.sampled_from(NAMES),
    hst.one_of(
        hst.none(),
        hst.tuples(
            hst.sampled_from(MODELS),
            hst.sampled_from((*BACKENDS, "missing")),
            hst.sampled_from((None, OLD, YOUNG)),
        ),
    ),
)
def test_no_change_of_one_route_moves_a_model_another_route_serves(
    routes: dict[str, Any], changed: str, edit: tuple[str, str, str | None] | None
) -> None:
    backends = [backend(b) for b in BACKENDS]
    before = run(gateway(), *backends, *routes.values())
    before_served = served(before)
    after = dict(routes)
    if edit is None:
        after.pop(changed, None)  # deleted (or never there)
    else:
        model, target, created = edit
        after[changed] = at(route(changed, [(target, 1)], model=model, created=created), 2)
    t = run(gateway(), *backends, *after.values(), last=before)
    now = served(t)
    for model, (owner, targets) in before_served.items():
        if owner != f"default/{changed}":
            assert now.get(model) == (owner, targets), (model, before_served, now)
    again = run(gateway(), *backends, *after.values(), last=t)  # and it stays that way
    for model, (owner, targets) in before_served.items():
        if owner != f"default/{changed}":
            assert served(again).get(model) == (owner, targets)


def test_serve_keeps_the_served_route_when_a_file_adds_one_whose_name_sorts_first(tmp_path: Any) -> None:
    """`routeway serve`'s reload (load_local with the last load's memory): local files carry
    no creationTimestamp, so under the age rule a new `a-chat` would win over `z-chat`."""
    from routeway.local import load_local

    head = "apiVersion: routeway.dev/v1alpha1\n"
    (tmp_path / "base.yaml").write_text(
        f"{head}kind: ModelGateway\nmetadata: {{name: default}}\nspec: {{}}\n---\n"
        f"{head}kind: ModelBackend\nmetadata: {{name: a}}\nspec: {{provider: openai, url: 'http://a:8000/v1'}}\n---\n"
        f"{head}kind: ModelBackend\nmetadata: {{name: evil}}\nspec: {{provider: openai, url: 'http://evil:8000/v1'}}\n---\n"
        f"{head}kind: ModelRoute\nmetadata: {{name: z-chat}}\nspec: {{model: gpt, backends: [{{name: a}}]}}\n"
    )
    first = load_local([str(tmp_path)])
    (tmp_path / "new.yaml").write_text(
        f"{head}kind: ModelRoute\nmetadata: {{name: a-chat}}\nspec: {{model: gpt, backends: [{{name: evil}}]}}\n"
    )
    second = load_local([str(tmp_path)], memory=first.memory)
    assert second.config is not None
    (gpt,) = [r for r in second.config.routes if r.model == "gpt"]
    assert gpt.id == "default/z-chat" and [t.backend for t in gpt.targets] == ["default/a"]
    assert any("a-chat" in p and st.REASON_MODEL_CONFLICT in p for p in second.problems)
    fresh = load_local([str(tmp_path)])  # a restarted serve has no memory: the age rule
    (gpt,) = [r for r in fresh.config.routes if r.model == "gpt"] if fresh.config else [None]
    assert gpt is not None and gpt.id == "default/a-chat"
