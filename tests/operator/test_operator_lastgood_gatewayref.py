"""A route's or a client's edit that renames its gatewayRef to a gateway that does not exist (a
typo) keeps its last good version on the gateway it was attached to (issue 14 item 3), against
kmock. A gateway's snapshot is built from the routes and clients indexed under it, so the
indexes name the gateway of the last good version too, not only the newest version's: without
that the route vanished from its gateway's config (404 for its model) and the client's keys
stopped authenticating, although the last good version was attached there. A route moved to
another gateway that exists is that gateway's alone: the old one drops it, and one reconcile
writes its status.
"""

from __future__ import annotations

from kmock_ext import RoutewayEmulator
from operator_factories import client, config_of, gateway, patch, secret, seed
from rig import ROUTES, eventually, running_operator, settled
from test_operator_lastgood import CLIENTS, ready_at, served_targets, status, world


async def test_route_gateway_ref_typo_keeps_serving_on_its_gateway(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: ready_at(kmock, "chat", 1), what="route Ready")
        await settled(kmock, state)
        good = served_targets(kmock)
        await patch(kmock, "ModelRoute", "chat", {"spec": {"gatewayRef": {"name": "gw-typo"}}})
        await eventually(
            lambda: status(kmock, ROUTES, "chat").get("observedGeneration") == 2, what="the typo reported"
        )
        await settled(kmock, state)
        assert served_targets(kmock) == good
        reported = status(kmock, ROUTES, "chat")
        assert reported.get("servingGeneration") == 1 and reported["lastGood"]["generation"] == 1


async def test_client_gateway_ref_typo_keeps_its_keys_on_its_gateway(kmock: RoutewayEmulator) -> None:
    seed(
        kmock,
        *world(),
        secret("gw-keys", admin="sk-admin-1"),
        secret("team-key", **{"api-key": "sk-team-1"}),
        client("team", "team-key", models=["llama"]),
    )
    await patch(kmock, "ModelGateway", "gw", {"spec": {"auth": {"apiKeySecretRef": {"name": "gw-keys"}}}})
    async with running_operator(kmock) as state:

        def clients() -> list[str]:
            return [c["id"] for c in config_of(kmock)["gateway"]["clients"]]

        await eventually(lambda: clients() == ["default/team"], what="the client served")
        await settled(kmock, state)
        await patch(kmock, "ModelClient", "team", {"spec": {"gatewayRef": {"name": "gw-typo"}}})
        await eventually(
            lambda: status(kmock, CLIENTS, "team").get("observedGeneration") == 2, what="the typo reported"
        )
        await settled(kmock, state)
        assert clients() == ["default/team"]
        assert status(kmock, CLIENTS, "team").get("servingGeneration") == 1


async def test_route_moved_to_an_existing_gateway_leaves_the_old_one(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(), gateway("gw2"))
    async with running_operator(kmock) as state:
        await eventually(lambda: ready_at(kmock, "chat", 1), what="route Ready")
        await settled(kmock, state)
        await patch(kmock, "ModelRoute", "chat", {"spec": {"gatewayRef": {"name": "gw2"}}})
        await eventually(lambda: ready_at(kmock, "chat", 2), what="the move Ready")
        await settled(kmock, state)
        assert [r["model"] for r in config_of(kmock, "gw")["routes"]] == []
        assert [r["model"] for r in config_of(kmock, "gw2")["routes"]] == ["llama"]
        moved = status(kmock, ROUTES, "chat")
        assert moved["servingGeneration"] == 2 and moved["gateway"] == "default/gw2"
        assert moved["lastGood"]["spec"]["gatewayRef"] == {"name": "gw2"}
