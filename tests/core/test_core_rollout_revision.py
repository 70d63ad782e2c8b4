"""Route revisions: what changes a revision's hash and what does not.

Matrix: the same input hashes alike (and alike with its weighted targets listed in another order,
but not with its fallbacks reordered: they are tried in order); a change of weights, fallbacks, retries, timeout or stickiness makes a new revision; an edit of a
ModelBackend the route uses makes a new revision of the route (and an edit of one it does not
use does not); the identity, generation, strategy and pause fields do not; two revisions of the
same backend name keep their own specs; a credential reference is hashed, its value never
exists here; the document round-trips and a tampered one is refused; a missing backend is a
caller's error.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from core_factories import secret
from core_rollout import PINNED_SPEC, chat, mb, revision_of, translated

from routeway.rollout import build_revision
from routeway.rollout.revision import revision_from_document

BASE: list[Any] = [mb("a"), mb("b"), chat([("a", 90), ("b", 10)])]


def test_the_hash_is_deterministic_and_free_of_weighted_target_order() -> None:
    """Weighted targets listed in another order serve the same (a weighted pick and the sticky
    rendezvous hash depend on the set only): the same revision, though each keeps its order."""
    one = revision_of(BASE)
    two = revision_of([mb("b"), mb("a"), chat([("b", 10), ("a", 90)])])
    assert [t.backend for t in two.route.targets] == ["default/b", "default/a"]  # as rendered
    assert one.hash == two.hash == revision_of(BASE).hash
    assert len(one.hash) == 16 and int(one.hash, 16) >= 0  # the ProxyConfig revision's form
    assert one.ref.backends == two.ref.backends == ("default/a", "default/b")


def test_the_fallback_order_is_part_of_the_hash() -> None:
    """Fallbacks are tried in order: reordering them changes what is served."""
    backends = [mb("a"), mb("b"), mb("c")]
    first_b = revision_of([*backends, chat([("a", 100)], fallbacks=[{"name": "b"}, {"name": "c"}])])
    first_c = revision_of([*backends, chat([("a", 100)], fallbacks=[{"name": "c"}, {"name": "b"}])])
    assert first_b.hash != first_c.hash


@pytest.mark.parametrize(
    ("case", "objects"),
    [
        ("weights", [mb("a"), mb("b"), chat([("a", 50), ("b", 50)])]),
        ("backend set", [mb("a"), mb("b"), chat([("a", 100)])]),
        ("fallbacks", [mb("a"), mb("b"), chat([("a", 90), ("b", 10)], fallbacks=[{"name": "b"}])]),
        ("retries", [mb("a"), mb("b"), chat([("a", 90), ("b", 10)], retries={"attempts": 3})]),
        ("timeout", [mb("a"), mb("b"), chat([("a", 90), ("b", 10)], timeout="30s")]),
        ("stickiness", [mb("a"), mb("b"), chat([("a", 90), ("b", 10)], stickiness={"header": "x-s"})]),
        ("backend url", [mb("a", url="http://new:8000/v1"), mb("b"), chat([("a", 90), ("b", 10)])]),
        ("backend model", [mb("a", model="llama-3.1"), mb("b"), chat([("a", 90), ("b", 10)])]),
        ("backend timeouts", [mb("a", timeouts={"firstByte": "10s"}), mb("b"), chat([("a", 90), ("b", 10)])]),
        ("backend limits", [mb("a", maxConcurrency=4), mb("b"), chat([("a", 90), ("b", 10)])]),
    ],
)
def test_what_is_served_changes_the_revision(case: str, objects: list[Any]) -> None:
    assert revision_of(objects).hash != revision_of(BASE).hash, case


def test_a_backend_edit_is_a_new_revision_of_the_route_and_both_specs_stay_servable() -> None:
    old = revision_of(BASE)
    new = revision_of([mb("a", url="http://llama-v2:8000/v1"), mb("b"), chat([("a", 90), ("b", 10)])])
    assert old.hash != new.hash
    assert old.ref.backends == new.ref.backends  # the same names ...
    urls = {r.hash: {b.id: b.url for b in r.backends} for r in (old, new)}
    assert urls[old.hash]["default/a"] == "http://a.ml.svc:8000/v1"  # ... the stable arm keeps its spec
    assert urls[new.hash]["default/a"] == "http://llama-v2:8000/v1"


@pytest.mark.parametrize(
    ("case", "objects"),
    [
        ("an unused backend edited", [*BASE, mb("c", url="http://elsewhere/v1")]),
        # (strategy only: the other rollout fields are not in RouteConfig at all)
        ("the strategy", [mb("a"), mb("b"), chat([("a", 90), ("b", 10)], strategy=PINNED_SPEC["strategy"])]),
    ],
)
def test_what_is_not_served_leaves_the_revision(case: str, objects: list[Any]) -> None:
    assert revision_of(objects).hash == revision_of(BASE).hash, case


def test_identity_and_generation_are_not_content() -> None:
    route_config, backends = translated(BASE)
    moved = route_config.model_copy(update={"generation": 7, "name": "other", "id": "default/other"})
    assert build_revision(moved, backends).hash == build_revision(route_config, backends).hash


def test_a_credential_reference_is_content_and_no_value_is_ever_there() -> None:
    with_key = [
        secret("k", key="sk-secret-value"),
        mb("a", apiKeySecretRef={"name": "k", "key": "key"}),
        chat(),
    ]
    plain = revision_of([mb("a"), chat()])
    keyed = revision_of(with_key)
    assert keyed.hash != plain.hash
    document = orjson.dumps(keyed.to_document()).decode()
    assert "default/k/key" in document
    assert "sk-secret-value" not in document


def test_the_document_round_trips_and_a_tampered_one_is_refused() -> None:
    revision = revision_of(BASE)
    document = orjson.loads(orjson.dumps(revision.to_document()))
    assert revision_from_document(document) == revision
    document["backends"][0]["url"] = "http://evil/v1"
    with pytest.raises(ValueError, match="does not match"):
        revision_from_document(document)
    with pytest.raises(ValueError, match="schema"):
        revision_from_document({**document, "schema": 99})


def test_a_backend_not_given_is_a_callers_error() -> None:
    route_config, backends = translated(BASE)
    with pytest.raises(ValueError, match="default/b"):
        build_revision(route_config, {"default/a": backends["default/a"]})
