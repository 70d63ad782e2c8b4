"""The operator keeps serving each object's last good version (issue 14 item 3), against kmock.

Matrix: a route's backends renamed to names that do not exist (the reported typo): the config
keeps the last good targets, no ControllerRevision is made from the bad version, the route
reports the problem with observedGeneration 2 and servingGeneration 1 and keeps lastGood;
an operator restart serves the same (the last good version is read back from status, not
memory); the fix serves the new version. A backend pointed at a Secret key that does not
exist keeps its last good version, in the config and in its status, and the route using it
stays Ready. A ModelClient and the gateway pointed at key Secrets that do not exist keep
their last good versions. A route whose first version is broken is absent, with no lastGood.
A Secret that loses the key a backend uses keeps its last good value (reconcile.kept_keys):
the backend stays in the config, the credentials Secret keeps the value, the backend reports
SecretKeyNotFound and the gateway a Warning Event; a rotation then takes effect, and a deleted
Secret is gone.
"""

from __future__ import annotations

import base64
from typing import Any

from kmock_ext import RoutewayEmulator
from operator_factories import (
    backend,
    client,
    condition,
    config_of,
    create,
    gateway,
    get,
    patch,
    route,
    secret,
    seed,
)
from rig import BACKENDS, GATEWAYS, ROUTES, eventually, objects_of, running_operator, settled

REVISIONS = "apps/v1/controllerrevisions"
CLIENTS = "routeway.dev/v1alpha1/modelclients"


def world() -> list[dict[str, Any]]:
    return [
        secret("openai", token="sk-test-123"),
        gateway("gw"),
        backend("llama-v1"),
        backend("llama-v2", url="http://vllm:8000/v1", apiKeySecretRef={"name": "openai", "key": "token"}),
        route("chat", "llama", {"llama-v1": 90, "llama-v2": 10}),
    ]


def served_targets(kmock: RoutewayEmulator, model: str = "llama") -> list[tuple[str, int]]:
    (served,) = [r for r in config_of(kmock)["routes"] if r["model"] == model]
    return [(t["backend"], t["weight"]) for t in served["targets"]]


def status(kmock: RoutewayEmulator, resource: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (get(kmock, resource, name) or {}).get("status") or {}
    return found


def ready_at(kmock: RoutewayEmulator, name: str, generation: int) -> bool:
    cond = condition(get(kmock, ROUTES, name), "Ready")
    return bool(cond and cond["status"] == "True" and cond["observedGeneration"] == generation)


async def test_route_typo_serves_the_last_good_version_across_a_restart(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    good = [("default/llama-v1", 90), ("default/llama-v2", 10)]
    async with running_operator(kmock) as state:
        await eventually(lambda: ready_at(kmock, "chat", 1), what="route Ready")
        await settled(kmock, state)
        assert status(kmock, ROUTES, "chat")["servingGeneration"] == 1
        revisions = set(objects_of(kmock, REVISIONS))
        revision = config_of(kmock)["revision"]

        await patch(kmock, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v11", "weight": 1}]}})

        def reported() -> bool:
            current = status(kmock, ROUTES, "chat")
            return current.get("observedGeneration") == 2 and current.get("servingGeneration") == 1

        await eventually(reported, what="the typo reported, generation 1 served")
        await settled(kmock, state)
        resolved = condition(get(kmock, ROUTES, "chat"), "ResolvedRefs")
        assert (
            resolved is not None and resolved["status"] == "False" and resolved["reason"] == "BackendNotFound"
        )
        assert "llama-v11" in resolved["message"] and "serving the last good version" in resolved["message"]
        programmed = condition(get(kmock, ROUTES, "chat"), "Programmed")
        assert programmed is not None and programmed["status"] == "True"
        assert "generation 1 (the last good one)" in programmed["message"]
        assert status(kmock, ROUTES, "chat")["lastGood"]["generation"] == 1
        assert served_targets(kmock) == good and config_of(kmock)["revision"] == revision
        assert set(objects_of(kmock, REVISIONS)) == revisions  # no revision of the bad version

    # A new operator process has no memory: it reads the last good version from status.
    async with running_operator(kmock) as state:
        await settled(kmock, state)
        assert served_targets(kmock) == good and config_of(kmock)["revision"] == revision
        assert status(kmock, ROUTES, "chat")["servingGeneration"] == 1

        await patch(kmock, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v2", "weight": 1}]}})
        await eventually(lambda: ready_at(kmock, "chat", 3), what="the fix Ready")
        await settled(kmock, state)
    assert served_targets(kmock) == [("default/llama-v2", 1)]
    fixed = status(kmock, ROUTES, "chat")
    assert fixed["servingGeneration"] == 3 and fixed["lastGood"]["generation"] == 3


async def test_backend_with_a_missing_secret_key_keeps_its_last_good_version(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: ready_at(kmock, "chat", 1), what="route Ready")
        await eventually(lambda: status(kmock, BACKENDS, "llama-v2").get("servingGeneration") == 1)
        revision = config_of(kmock)["revision"]
        body = {
            "spec": {"url": "http://vllm-new:8000/v1", "apiKeySecretRef": {"name": "openai", "key": "tokne"}}
        }
        await patch(kmock, "ModelBackend", "llama-v2", body)

        def reported() -> bool:
            current = status(kmock, BACKENDS, "llama-v2")
            return current.get("observedGeneration") == 2 and current.get("servingGeneration") == 1

        await eventually(reported, what="the backend's problem reported")
        await settled(kmock, state)
    resolved = condition(get(kmock, BACKENDS, "llama-v2"), "ResolvedRefs")
    assert resolved is not None and resolved["reason"] == "SecretKeyNotFound"
    (served,) = [b for b in config_of(kmock)["backends"] if b["name"] == "llama-v2"]
    assert served["url"] == "http://vllm:8000/v1" and served["credentialRef"] == "default/openai/token"
    assert config_of(kmock)["revision"] == revision
    assert ready_at(kmock, "chat", 1)  # the route resolves to the backend's last good version


async def test_first_version_broken_is_absent(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: ready_at(kmock, "chat", 1), what="route Ready")
        await create(kmock, route("code", "code", {"nowhere": 1}))
        await eventually(lambda: condition(get(kmock, ROUTES, "code"), "ResolvedRefs"), what="code reported")
        await settled(kmock, state)
    code = status(kmock, ROUTES, "code")
    assert "lastGood" not in code and "servingGeneration" not in code
    assert served_targets(kmock, "code") == []  # rendered without targets, as before


async def test_client_and_gateway_with_missing_secrets_keep_their_last_good_versions(
    kmock: RoutewayEmulator,
) -> None:
    """A ModelClient pointed at a key Secret that does not exist, and the gateway pointed at a
    client-key Secret that does not exist: both keep their last good versions in the config."""
    seed(
        kmock,
        *world(),
        secret("gw-keys", admin="sk-admin-1"),
        secret("team-key", **{"api-key": "sk-team-1"}),
        client("team", "team-key", models=["llama"]),
    )
    await patch(kmock, "ModelGateway", "gw", {"spec": {"auth": {"apiKeySecretRef": {"name": "gw-keys"}}}})
    async with running_operator(kmock) as state:

        def listed() -> bool:
            gateway = config_of(kmock)["gateway"]
            return [c["id"] for c in gateway["clients"]] == ["default/team"] and bool(
                gateway["clientKeyRefs"]
            )

        await eventually(listed, what="client and gateway keys served")
        await settled(kmock, state)
        before = config_of(kmock)
        await patch(
            kmock, "ModelClient", "team", {"spec": {"keySecretRef": {"name": "team-kye", "key": "api-key"}}}
        )
        await patch(kmock, "ModelGateway", "gw", {"spec": {"auth": {"apiKeySecretRef": {"name": "gw-kyes"}}}})

        def reported() -> bool:
            team = status(kmock, CLIENTS, "team")
            gateway = status(kmock, GATEWAYS, "gw")
            return (team.get("observedGeneration"), team.get("servingGeneration")) == (2, 1) and (
                gateway.get("observedGeneration"),
                gateway.get("servingGeneration"),
            ) == (3, 2)

        await eventually(reported, what="client and gateway serving their last good versions")
        await settled(kmock, state)
    after = config_of(kmock)
    assert after["gateway"]["clients"] == before["gateway"]["clients"]
    assert (
        after["gateway"]["clientKeyRefs"] == before["gateway"]["clientKeyRefs"] == ["default/gw-keys/admin"]
    )
    assert condition(get(kmock, CLIENTS, "team"), "ResolvedRefs")["reason"] == "SecretNotFound"
    assert condition(get(kmock, GATEWAYS, "gw"), "ResolvedRefs")["reason"] == "SecretNotFound"


def credential(kmock: RoutewayEmulator, ref: str = "default_openai_token") -> str | None:
    data = (get(kmock, "v1/secrets", "routeway-gw-credentials") or {}).get("data") or {}
    return base64.b64decode(data[ref]).decode() if ref in data else None


def served_backends(kmock: RoutewayEmulator) -> list[str]:
    return sorted(b["name"] for b in config_of(kmock)["backends"])


async def put_secret(kmock: RoutewayEmulator, **values: str) -> None:
    resp = await kmock.put("/api/v1/namespaces/default/secrets/openai", json=secret("openai", **values))
    assert resp.status == 200, await resp.text()


async def test_a_secret_that_loses_a_key_keeps_its_last_good_value(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: credential(kmock) == "sk-test-123", what="credential written")
        await settled(kmock, state)
        await put_secret(kmock, other="sk-other-1")  # the key the backend uses removed

        def reported() -> bool:
            resolved = condition(get(kmock, BACKENDS, "llama-v2"), "ResolvedRefs")
            return resolved is not None and resolved["reason"] == "SecretKeyNotFound"

        await eventually(reported, what="the backend's problem reported")
        await settled(kmock, state)
        assert served_backends(kmock) == ["llama-v1", "llama-v2"]
        assert served_targets(kmock) == [("default/llama-v1", 90), ("default/llama-v2", 10)]
        assert credential(kmock) == "sk-test-123"
        warnings = [
            e for e in objects_of(kmock, "v1/events").values() if e["reason"] == "SecretKeyKeptLastGood"
        ]
        assert [e["type"] for e in warnings] == ["Warning"]
        assert "default/openai/token" in warnings[0]["message"] and "sk-" not in warnings[0]["message"]

        await put_secret(kmock, token="sk-test-456")  # back, rotated: the new value serves
        await eventually(lambda: credential(kmock) == "sk-test-456", what="the rotation applied")
        await settled(kmock, state)
        resp = await kmock.delete("/api/v1/namespaces/default/secrets/openai")
        assert resp.status == 200, await resp.text()
        await eventually(lambda: served_backends(kmock) == ["llama-v1"], what="the deleted Secret gone")
        await settled(kmock, state)
    assert credential(kmock) is None
