"""ModelClients in the operator, end to end against kmock (issue 13), with the proxies' /usage
from the stand-in reader at the one point where pods are read (rollout_standin.py).

Matrix: a client on a gateway with auth → Accepted, ResolvedRefs, Programmed, Ready,
status.gateway and status.models, listed by reference in the gateway's ConfigMap; a change of
its spec re-renders and bumps observedGeneration / a client on a gateway without auth →
Accepted=False AuthDisabled, Stalled, a Warning Event, not in the config / its key Secret
missing → ResolvedRefs=False SecretNotFound, then created → Ready (the Secret's event alone
must find the client's gateway) / status.usage summed over the ready pods' /usage, rewritten
when the numbers change and not while they stay the same / the key's value is nowhere in
what the operator writes: credentials Secret, ConfigMap, statuses, Events.
"""

from __future__ import annotations

import base64
import json
import time
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
    is_true,
    patch,
    route,
    secret,
    seed,
)
from rig import GATEWAYS, eventually, objects_of, running_operator, settled
from rollout_standin import StandInProxies, proxy_pod

from routeway.client_usage import rfc3339

CLIENTS = "routeway.dev/v1alpha1/modelclients"
KEY_VALUE = "sk-client-7f3a9c-do-not-leak"
AUTH = {"apiKeySecretRef": {"name": "gw-keys"}}


def world(auth: bool = True, key_secret: bool = True) -> list[dict[str, Any]]:
    objs = [
        secret("gw-keys", admin="sk-admin-1"),
        gateway("gw", **({"auth": AUTH} if auth else {})),
        backend("llama"),
        route("chat", "chat", {"llama": 1}),
        client(
            "search-team",
            "search-team-key",
            models=["chat", "embed-*", "chat"],
            limits={"requestsPerMinute": 600, "tokensPerMinute": 200000},
        ),
        client("everything", "everything-key"),
        secret("everything-key", **{"api-key": "sk-everything-2"}),
    ]
    if key_secret:
        objs.append(secret("search-team-key", **{"api-key": KEY_VALUE}))
    return objs


def client_ready(kmock: RoutewayEmulator, name: str, generation: int = 1) -> bool:
    cond = condition(get(kmock, CLIENTS, name), "Ready")
    return bool(cond and cond["status"] == "True" and cond["observedGeneration"] == generation)


def events(kmock: RoutewayEmulator, reason: str) -> list[dict[str, Any]]:
    return [e for e in objects_of(kmock, "v1/events").values() if e["reason"] == reason]


async def test_client_on_a_gateway_with_auth_is_ready_and_listed_by_reference(
    kmock: RoutewayEmulator,
) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: client_ready(kmock, "search-team"), what="client Ready")
        await eventually(lambda: client_ready(kmock, "everything"), what="second client Ready")
        await settled(kmock, state)

        mc = get(kmock, CLIENTS, "search-team")
        status = mc["status"]
        assert status["observedGeneration"] == 1
        assert [c["type"] for c in status["conditions"]] == [
            "Accepted",
            "ResolvedRefs",
            "Programmed",
            "Ready",
            "Reconciling",
            "Stalled",
        ]
        assert is_true(mc, "Accepted") and is_true(mc, "ResolvedRefs") and is_true(mc, "Programmed")
        assert status["gateway"] == "default/gw"
        assert status["models"] == "chat,embed-*"
        assert get(kmock, CLIENTS, "everything")["status"]["models"] == "*"
        assert "usage" not in status  # no proxy pod has been read

        config = config_of(kmock)
        assert config["gateway"]["clients"] == [
            {
                "id": "default/everything",
                "keyRef": "default/everything-key/api-key",
                "models": None,
                "limits": None,
            },
            {
                "id": "default/search-team",
                "keyRef": "default/search-team-key/api-key",
                "models": ["chat", "embed-*"],
                "limits": {"requestsPerMinute": 600, "tokensPerMinute": 200000, "tokensPerDay": None},
            },
        ]
        assert config["gateway"]["requireClientKey"] is True
        gw = get(kmock, GATEWAYS, "gw")
        assert gw["status"]["routes"] == 1  # clients are not routes

        # A change of the client's spec re-renders its gateway and moves its status.
        await patch(kmock, "ModelClient", "search-team", {"spec": {"models": ["embed-*"]}})
        await eventually(lambda: client_ready(kmock, "search-team", 2), what="client Ready at generation 2")
        await eventually(lambda: get(kmock, CLIENTS, "search-team")["status"]["models"] == "embed-*")
        await eventually(
            lambda: [c["models"] for c in config_of(kmock)["gateway"]["clients"]] == [None, ["embed-*"]],
            what="config follows the client",
        )


async def test_client_on_a_gateway_without_auth_is_not_accepted(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(auth=False))
    async with running_operator(kmock) as state:
        await eventually(
            lambda: (
                (condition(get(kmock, CLIENTS, "search-team"), "Accepted") or {}).get("reason")
                == "AuthDisabled"
            ),
            what="Accepted=False AuthDisabled",
        )
        await settled(kmock, state)

    mc = get(kmock, CLIENTS, "search-team")
    accepted = condition(mc, "Accepted")
    assert accepted is not None and accepted["status"] == "False"
    assert "has no spec.auth" in accepted["message"]
    assert condition(mc, "Ready")["status"] == "False"
    assert condition(mc, "Stalled")["status"] == "True"
    assert condition(mc, "Programmed")["reason"] == "NotAttached"
    assert "gateway" not in mc["status"]
    assert config_of(kmock)["gateway"]["clients"] == []
    warnings = [e for e in events(kmock, "AuthDisabled") if e["involvedObject"]["name"] == "search-team"]
    assert [e["type"] for e in warnings] == ["Warning"]


async def test_missing_key_secret_then_created(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(key_secret=False))
    async with running_operator(kmock) as state:
        await eventually(
            lambda: (
                (condition(get(kmock, CLIENTS, "search-team"), "ResolvedRefs") or {}).get("reason")
                == "SecretNotFound"
            ),
            what="ResolvedRefs=False SecretNotFound",
        )
        await settled(kmock, state)
        mc = get(kmock, CLIENTS, "search-team")
        assert condition(mc, "ResolvedRefs")["status"] == "False"
        assert is_true(mc, "Accepted") and not is_true(mc, "Ready")
        assert [c["id"] for c in config_of(kmock)["gateway"]["clients"]] == ["default/everything"]

        await create(kmock, secret("search-team-key", **{"api-key": KEY_VALUE}))
        await eventually(lambda: client_ready(kmock, "search-team"), what="client Ready once its key exists")
        assert [c["id"] for c in config_of(kmock)["gateway"]["clients"]] == [
            "default/everything",
            "default/search-team",
        ]


def usage_doc(requests: int, prompt: int, completion: int, cost: str | float) -> dict[str, Any]:
    """A pod's /usage as the proxy serves it, for windows that are current now."""
    now = time.time()
    minute, day = now - now % 60, now - now % 86400
    window = {"requests": requests, "promptTokens": prompt, "completionTokens": completion, "cost": cost}
    return {
        "clients": [
            {
                "client": "default/search-team",
                "minute": {"start": minute, **window},
                "day": {"start": day, **window, "requests": requests * 10},
                "currency": "USD",
            }
        ]
    }


async def test_usage_is_summed_over_the_pods_and_written_when_it_changes(kmock: RoutewayEmulator) -> None:
    proxies = StandInProxies(kmock)
    proxies.usage = {"proxy-a": usage_doc(3, 100, 40, "0.0125"), "proxy-b": usage_doc(2, 50, 10, 0.0075)}
    seed(kmock, *world())
    for name, ip in (("proxy-a", "10.0.0.1"), ("proxy-b", "10.0.0.2")):
        kmock.seed("v1/pods", "default", proxy_pod(name, ip))
    kmock.seed("v1/pods", "default", proxy_pod("proxy-starting", "10.0.0.3", ready=False))

    def usage() -> dict[str, Any]:
        return dict((get(kmock, CLIENTS, "search-team") or {}).get("status", {}).get("usage") or {})

    async with running_operator(kmock, proxy_reader=proxies, usage_interval=0.05):
        await eventually(lambda: usage().get("minute"), what="status.usage written")
        first = usage()
        assert first["minute"]["requests"] == 5
        assert first["minute"]["promptTokens"] == 150 and first["minute"]["completionTokens"] == 50
        assert first["minute"]["cost"] == "0.02"
        assert first["day"]["requests"] == 50
        assert first["currency"] == "USD" and first["observedAt"].endswith("Z")

        # Each client's usage is its own status write: wait for this one's, not search-team's.
        def usage_of_everything() -> dict[str, Any]:
            return dict((get(kmock, CLIENTS, "everything") or {}).get("status", {}).get("usage") or {})

        everything = await eventually(usage_of_everything, what="everything's status.usage written")
        assert everything["observedAt"] and "minute" not in everything  # read, and nothing used

        # Unchanged numbers: read again and again, never written again.
        def status_writes() -> int:
            return sum(
                1
                for r in kmock.writes()
                if r.method == "PATCH" and r.url.path.endswith("/modelclients/search-team/status")
            )

        # (observedAt has whole seconds: wait for reads in a later second than the first's,
        # then for one more, so the reconcile that made them has written what it would.)
        writes = status_writes()

        def reads_until_a_later_second() -> int | None:
            times = proxies.usage_read_at
            return next((i + 1 for i, at in enumerate(times) if rfc3339(at) > first["observedAt"]), None)

        count = await eventually(reads_until_a_later_second, what="a read in a later second")
        await eventually(lambda: len(proxies.usage_read_at) >= count + 4, what="two more reads of both pods")
        assert status_writes() == writes
        assert usage() == first

        proxies.usage["proxy-b"] = usage_doc(4, 80, 20, "0.01")
        await eventually(lambda: usage()["minute"]["requests"] == 7, what="new numbers written")
        assert usage()["minute"]["cost"] == "0.0225"
    assert "proxy-starting" not in json.dumps(proxies.usage)


async def test_no_key_value_in_anything_the_operator_writes(kmock: RoutewayEmulator) -> None:
    """The credentials Secret holds client keys as hashes only (or not at all), never the
    value; the ConfigMap holds references; statuses and Events say nothing of it."""
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: client_ready(kmock, "search-team"), what="client Ready")
        await settled(kmock, state)
        # A rotated key is read again; still no value anywhere.
        await patch_secret(kmock, "search-team-key", KEY_VALUE + "-rotated")
        await settled(kmock, state)

    encoded = base64.b64encode(KEY_VALUE.encode()).decode()
    creds = get(kmock, "v1/secrets", "routeway-gw-credentials")
    assert creds is not None
    values = [base64.b64decode(v).decode() for v in (creds.get("data") or {}).values()]
    values += list((creds.get("stringData") or {}).values())
    assert values, "the credentials Secret was written with what it resolves (not vacuously empty)"
    assert not any(KEY_VALUE in v for v in values), "a client key's value is in the credentials Secret"
    assert encoded not in json.dumps(creds)
    written = json.dumps(
        [get(kmock, "v1/configmaps", "routeway-gw-config")]
        + [
            obj.raw
            for resource in (CLIENTS, GATEWAYS, "v1/events")
            for obj in objects_of(kmock, resource).values()
        ]
    )
    assert KEY_VALUE not in written and encoded not in written


async def patch_secret(kmock: RoutewayEmulator, name: str, value: str) -> None:
    body = {"data": {"api-key": base64.b64encode(value.encode()).decode()}}
    resp = await kmock.patch(f"/api/v1/namespaces/default/secrets/{name}", json=body)
    assert resp.status == 200, await resp.text()
