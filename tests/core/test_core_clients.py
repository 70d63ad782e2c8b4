"""ModelClients, route limits and cache, backend pricing through translation and rendering
(issue 13's schema): attachment, AuthDisabled, key Secrets, and what the ProxyConfig holds."""

from __future__ import annotations

from typing import Any

import pytest
from core_factories import backend, client, gateway, route, secret
from pydantic import ValidationError

from routeway import status as st
from routeway.render import render_all
from routeway.resources import parse_bytes
from routeway.rollout.revision import build_revision
from routeway.translate import Inventory, ObjectKey, translate

AUTH = {"auth": {"apiKeySecretRef": {"name": "admin-keys"}}}


def world(*objects: Any, gw: Any = None) -> Any:
    base = [gw or gateway(**AUTH), secret("admin-keys", admin="a"), backend("a"), route("chat", [("a", 1)])]
    return translate(Inventory.from_objects([*base, *objects]))


def conditions(t: Any, name: str) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in t.conditions[ObjectKey("ModelClient", "default", name)]}


def test_an_attached_client_is_rendered_by_reference_with_its_models_and_limits() -> None:
    limits = {"requestsPerMinute": 600, "tokensPerMinute": 200000, "tokensPerDay": 5000000}
    t = world(
        client("search", models=["embed-*", "chat"], limits=limits), secret("search-key", **{"api-key": "k"})
    )
    assert conditions(t, "search") == {
        st.ACCEPTED: ("True", "Accepted"),
        st.RESOLVED_REFS: ("True", "ResolvedRefs"),
    }
    config = render_all(t)[("default", "default")]
    (rendered,) = config.gateway.clients
    assert rendered.id == "default/search" and rendered.key_ref == "default/search-key/api-key"
    assert rendered.models == ("chat", "embed-*")
    assert rendered.limits is not None and rendered.limits.tokens_per_day == 5000000
    assert '"k"' not in config.to_json().decode()  # a reference, never the key


def test_a_client_on_a_gateway_without_auth_is_not_accepted() -> None:
    t = world(client("search"), secret("search-key", **{"api-key": "k"}), gw=gateway())
    assert conditions(t, "search")[st.ACCEPTED] == ("False", st.REASON_AUTH_DISABLED)
    assert render_all(t)[("default", "default")].gateway.clients == ()


def test_a_client_whose_key_secret_is_missing_is_left_out() -> None:
    t = world(client("search"))
    assert conditions(t, "search")[st.RESOLVED_REFS] == ("False", st.REASON_SECRET_NOT_FOUND)
    assert render_all(t)[("default", "default")].gateway.clients == ()
    t = world(client("search"), secret("search-key", other="x"))
    assert conditions(t, "search")[st.RESOLVED_REFS] == ("False", st.REASON_SECRET_KEY_NOT_FOUND)


def test_a_client_follows_the_gateways_allowed_namespaces() -> None:
    t = world(
        client("search", namespace="team-b", gatewayRef={"name": "default", "namespace": "default"}),
        secret("search-key", namespace="team-b", **{"api-key": "k"}),
    )
    status, reason = conditions_in(t, "team-b", "search")
    assert (status, reason) == ("False", st.REASON_NOT_ALLOWED)


def conditions_in(t: Any, namespace: str, name: str) -> tuple[str, str]:
    found = {c.type: (c.status, c.reason) for c in t.conditions[ObjectKey("ModelClient", namespace, name)]}
    return found[st.ACCEPTED]


def test_clients_do_not_count_as_routes_of_the_gateway() -> None:
    t = world(client("search"), secret("search-key", **{"api-key": "k"}))
    routes = [k for k in t.attachments if k.kind == "ModelRoute"]
    assert len(routes) == 1 and ObjectKey("ModelClient", "default", "search") in t.attachments


def test_route_limits_cache_and_pricing_are_rendered_but_are_not_a_new_revision() -> None:
    plain = render_all(world())[("default", "default")]
    priced = translate(
        Inventory.from_objects(
            [
                gateway(**AUTH),
                secret("admin-keys", admin="a"),
                backend("a", pricing={"inputPerMillionTokens": 0.5, "outputPerMillionTokens": 1.5}),
                route(
                    "chat",
                    [("a", 1)],
                    limits={"requestsPerMinute": 10, "tokensPerMinute": 5000},
                    cache={"ttl": "10m", "maxBytes": "64Mi", "scope": "Route"},
                ),
            ]
        )
    )
    config = render_all(priced)[("default", "default")]
    r = config.routes[0]
    assert r.limits is not None and (r.limits.requests_per_minute, r.limits.default_max_tokens) == (10, 1024)
    assert r.cache is not None and (r.cache.ttl, r.cache.max_bytes, r.cache.scope) == (
        600.0,
        64 * 2**20,
        "Route",
    )
    assert config.backends[0].pricing is not None and config.backends[0].pricing.currency == "USD"
    backends = {b.id: b for b in config.backends}
    before = build_revision(plain.routes[0], {b.id: b for b in plain.backends})
    assert build_revision(r, backends).hash == before.hash, "limits, cache and pricing are not routing"


def test_gateway_limits_are_always_rendered_with_the_pod_count() -> None:
    redis = {
        "redis": {"url": "redis://redis.ml:6379/0", "passwordSecretRef": {"name": "r", "key": "p"}},
        "onRedisFailure": "FailClosed",
    }
    config = render_all(world(gw=gateway(replicas=3, limits=redis, **AUTH)))[("default", "default")]
    limits = config.gateway.limits
    assert (limits.redis_url, limits.redis_password_ref, limits.on_redis_failure, limits.replicas) == (
        "redis://redis.ml:6379/0",
        "default/r/p",
        "FailClosed",
        3,
    )
    assert render_all(world())[("default", "default")].gateway.limits.replicas == 2


@pytest.mark.parametrize("bad", ["redis://user:pw@host:6379", "http://host", "redis://host/0?password=x"])
def test_a_redis_url_with_a_password_or_another_scheme_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        gateway(limits={"redis": {"url": bad}})


def test_byte_sizes() -> None:
    assert (
        parse_bytes("64Mi") == 64 * 2**20 and parse_bytes("500k") == 500_000 and parse_bytes("2048") == 2048
    )
    with pytest.raises(ValueError):
        parse_bytes("64MB")
    with pytest.raises(ValidationError):
        route("chat", cache={"maxBytes": "1"})
