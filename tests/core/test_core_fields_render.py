"""Each spec field lands in its own ProxyConfig field: a table, not only golden files.

A golden file accepts whatever a careless `ROUTEWAY_UPDATE_GOLDEN=1` wrote (a swapped
`idle`/`firstByte` would pass review as one more changed number). Here every field of a
ModelBackend, ModelRoute, ModelClient and ModelGateway is set to a value no other field has,
and the rendered document of each object is compared leaf by leaf with a table of where each
value must land, in the proxy's units (durations in seconds, byte sizes in bytes, references as
"namespace/secret/key" ids). A swap, a drop, a unit slip or a rendered leaf nobody listed
fails; a new ProxyConfig field needs its row here. `test_values_are_distinct` keeps the table
able to see swaps.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_factories import backend, client, gateway, route, secret

from routeway.render import render_document
from routeway.resources import ModelBackend, ModelClient, ModelGateway, ModelRoute, Secret
from routeway.translate import Inventory, translate

NS = "team"
BACKEND_SPEC: dict[str, Any] = {
    "provider": "openai",
    "url": "http://up.example:8020/v1/",
    "model": "upstream-model",
    "version": "v19",
    "apiKeySecretRef": {"name": "upstream", "key": "token"},
    "timeouts": {"connect": "1500ms", "firstByte": "2250ms", "idle": "3750ms", "total": "4500ms"},
    "maxConcurrency": 9,
    "queueTimeout": "500ms",
    "outlierDetection": {"consecutiveFailures": 8, "baseEjectionTime": "66s", "maxEjectionTime": "7m"},
    "pricing": {"inputPerMillionTokens": 1.7, "outputPerMillionTokens": 1.8, "currency": "EUR"},
}
BACKEND_EXPECTED: dict[str, Any] = {
    "provider": "openai",
    "url": "http://up.example:8020/v1",
    "version": "v19",
    "credentialRef": "team/upstream/token",
    "timeouts.connect": 1.5,
    "timeouts.firstByte": 2.25,
    "timeouts.idle": 3.75,
    "timeouts.total": 4.5,
    "maxConcurrency": 9,
    "queueTimeout": 0.5,
    "outlierDetection.consecutiveFailures": 8,
    "outlierDetection.baseEjection": 66.0,
    "outlierDetection.maxEjection": 420.0,
    "mock": None,
    "pricing.inputPerMillion": 1.7,
    "pricing.outputPerMillion": 1.8,
    "pricing.currency": "EUR",
}
MOCK_SPEC: dict[str, Any] = {
    "provider": "mock",
    "mock": {
        "latency": "125ms",
        "timeToFirstToken": "375ms",
        "tokensPerSecond": 140.0,
        "errorRate": 0.15,
        "maxTokens": 160,
    },
}
MOCK_EXPECTED: dict[str, Any] = {
    "mock.latency": 0.125,
    "mock.timeToFirstToken": 0.375,
    "mock.tokensPerSecond": 140.0,
    "mock.errorRate": 0.15,
    "mock.maxTokens": 160,
}
ROUTE_SPEC: dict[str, Any] = {
    "model": "public-model",
    "gatewayRef": {"name": "gw"},
    "fallbacks": [{"name": "sim"}],
    "retries": {"attempts": 3, "retryOn": ["timeout", "429", "timeout"], "backoff": "250ms"},
    "timeout": "24s",
    "stickiness": {"header": "X-Session-Key"},
    "limits": {"requestsPerMinute": 25, "tokensPerMinute": 26000, "defaultMaxTokens": 27},
    "cache": {"ttl": "28s", "maxBytes": "29Mi", "scope": "Client"},
}
ROUTE_EXPECTED: dict[str, Any] = {
    "model": "public-model",
    "generation": 31,
    "targets.0.backend": "team/up",
    "targets.0.model": "upstream-model",  # the backend's spec.model overrides the public name
    "targets.0.weight": 21,
    "targets.1.backend": "team/sim",
    "targets.1.model": "public-model",  # no spec.model: the public name goes upstream
    "targets.1.weight": 22,
    "fallbacks.0.backend": "team/sim",
    "fallbacks.0.model": "public-model",
    "fallbacks.0.weight": 0,
    "retries.attempts": 3,
    "retries.retryOn": ["429", "timeout"],
    "retries.backoffBase": 0.25,
    "retries.backoffMax": 1.0,
    "timeout": 24.0,
    "stickyHeader": "x-session-key",
    "limits.requestsPerMinute": 25,
    "limits.tokensPerMinute": 26000,
    "limits.defaultMaxTokens": 27,
    "cache.ttl": 28.0,
    "cache.maxBytes": 29 * 1024 * 1024,
    "cache.scope": "Client",
    "revision": None,  # set by a rollout adapter, never by translation
    "pinnedBackends": [],
    "canary": None,
}
CLIENT_SPEC: dict[str, Any] = {
    "gatewayRef": {"name": "gw"},
    "keySecretRef": {"name": "team-key", "key": "k"},
    "models": ["public-*", "another", "public-*"],
    "limits": {"requestsPerMinute": 32, "tokensPerMinute": 33, "tokensPerDay": 34},
}
CLIENT_EXPECTED: dict[str, Any] = {
    "id": "team/search",
    "keyRef": "team/team-key/k",
    "models": ["another", "public-*"],
    "limits.requestsPerMinute": 32,
    "limits.tokensPerMinute": 33,
    "limits.tokensPerDay": 34,
}
GATEWAY_SPEC: dict[str, Any] = {
    "replicas": 4,
    "maxRequestBodyBytes": 35000,
    "auth": {"apiKeySecretRef": {"name": "gw-keys"}},
    "limits": {
        "redis": {"url": "redis://redis.example:6380/2", "passwordSecretRef": {"name": "redis", "key": "pw"}},
        "onRedisFailure": "FailClosed",
    },
}
GATEWAY_EXPECTED: dict[str, Any] = {
    "namespace": NS,
    "name": "gw",
    "maxBodyBytes": 35000,
    "clientKeyRefs": ["team/gw-keys/a", "team/gw-keys/b"],
    "requireClientKey": True,
    "limits.redisUrl": "redis://redis.example:6380/2",
    "limits.redisPasswordRef": "team/redis/pw",
    "limits.onRedisFailure": "FailClosed",
    "limits.replicas": 4,
}
IDENTITY = {"id", "namespace", "name"}  # of backends and routes: from metadata, checked apart


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted path; lists of scalars stay whole, lists of objects are indexed."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    route_obj = route("chat", [("up", 21), ("sim", 22)], namespace=NS, **ROUTE_SPEC)
    route_obj = route_obj.model_copy(
        update={"metadata": route_obj.metadata.model_copy(update={"generation": 31})}
    )
    objects: list[ModelBackend | ModelRoute | ModelGateway | ModelClient | Secret] = [
        gateway("gw", NS, **GATEWAY_SPEC),
        backend("up", NS, **BACKEND_SPEC),
        backend("sim", NS, **MOCK_SPEC),
        route_obj,
        client("search", NS, **CLIENT_SPEC),
        secret("upstream", NS, token="t"),
        secret("gw-keys", NS, b="x", a="y"),
        secret("team-key", NS, k="z"),
        secret("redis", NS, pw="p"),
    ]
    translation = translate(Inventory.from_objects(objects))
    assert not [f for fs in translation.findings.values() for f in fs], translation.findings
    return render_document(translation.gateways[(NS, "gw")])


def by_id(items: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    (item,) = [i for i in items if i["id"] == wanted]
    return item


def test_backend_fields(document: dict[str, Any]) -> None:
    rendered = flatten(by_id(document["backends"], "team/up"))
    assert {k: rendered.pop(k) for k in IDENTITY} == {"id": "team/up", "namespace": NS, "name": "up"}
    assert rendered == BACKEND_EXPECTED


def test_mock_backend_fields(document: dict[str, Any]) -> None:
    rendered = flatten(by_id(document["backends"], "team/sim"))
    mock = {k: v for k, v in rendered.items() if k.startswith("mock.")}
    defaults = {k: mock.pop(k) for k in list(mock) if k not in MOCK_EXPECTED}
    assert mock == MOCK_EXPECTED
    assert defaults == {"mock.embeddingDimensions": 8}  # no spec field: the documented default


def test_route_fields(document: dict[str, Any]) -> None:
    (only,) = document["routes"]
    rendered = flatten(only)
    assert {k: rendered.pop(k) for k in IDENTITY} == {"id": "team/chat", "namespace": NS, "name": "chat"}
    assert rendered == ROUTE_EXPECTED


def test_client_fields(document: dict[str, Any]) -> None:
    (only,) = document["gateway"]["clients"]
    assert flatten(only) == CLIENT_EXPECTED


def test_gateway_fields(document: dict[str, Any]) -> None:
    gateway_doc = {k: v for k, v in document["gateway"].items() if k != "clients"}
    assert flatten(gateway_doc) == GATEWAY_EXPECTED


def test_values_are_distinct() -> None:
    """Numbers that a swap could exchange are all different, so the table sees every swap."""
    numbers = [
        v
        for table in (BACKEND_EXPECTED, MOCK_EXPECTED, ROUTE_EXPECTED, CLIENT_EXPECTED, GATEWAY_EXPECTED)
        for k, v in table.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in {"fallbacks.0.weight"}
    ]
    assert len(numbers) == len(set(numbers))
