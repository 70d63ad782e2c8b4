"""`status.servingGeneration` names only a version that really serves (CRD: "absent while no
version of it is usable"), against kmock.

An unchanged object whose problem comes from elsewhere has its current generation as its last
good one, but it is not in the config: a backend whose Secret is deleted, a route whose only
backend is deleted (rendered with no target). Both lose servingGeneration and keep lastGood;
a route that still has one of its two backends keeps serving; restoring the Secret serves again.
"""

from __future__ import annotations

from typing import Any

from kmock_ext import RoutewayEmulator
from operator_factories import backend, config_of, create, delete, gateway, get, route, secret, seed
from rig import BACKENDS, ROUTES, eventually, running_operator, settled


def status(kmock: RoutewayEmulator, resource: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (get(kmock, resource, name) or {}).get("status") or {}
    return found


async def test_serving_generation_is_absent_while_nothing_of_the_object_serves(
    kmock: RoutewayEmulator,
) -> None:
    seed(
        kmock,
        secret("openai", token="sk-test-123"),
        gateway("gw"),
        backend("keyed", apiKeySecretRef={"name": "openai", "key": "token"}),
        backend("plain"),
        backend("other"),
        route("solo", "solo", {"plain": 1}),
        route("pair", "pair", {"keyed": 1, "other": 1}),
    )
    async with running_operator(kmock) as state:
        for resource, name in ((BACKENDS, "keyed"), (ROUTES, "solo"), (ROUTES, "pair")):
            await eventually(
                lambda r=resource, n=name: status(kmock, r, n).get("servingGeneration") == 1,
                what=f"{name} serving",
            )
        gone = await kmock.delete("/api/v1/namespaces/default/secrets/openai")
        assert gone.status == 200, await gone.text()
        await delete(kmock, "ModelBackend", "plain")
        await eventually(
            lambda: "servingGeneration" not in status(kmock, BACKENDS, "keyed"),
            what="keyed no longer serving",
        )
        await eventually(
            lambda: "servingGeneration" not in status(kmock, ROUTES, "solo"), what="solo no longer serving"
        )
        await settled(kmock, state)
        assert [b["name"] for b in config_of(kmock)["backends"]] == ["other"]
        assert status(kmock, BACKENDS, "keyed")["lastGood"]["generation"] == 1  # kept for later
        assert status(kmock, ROUTES, "solo")["lastGood"]["generation"] == 1
        assert status(kmock, ROUTES, "pair")["servingGeneration"] == 1  # "other" still serves it

        await create(kmock, secret("openai", token="sk-test-123"))
        await eventually(
            lambda: status(kmock, BACKENDS, "keyed").get("servingGeneration") == 1, what="keyed serving again"
        )
