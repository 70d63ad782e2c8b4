"""Two operator replicas with kopf peering: only the higher-priority one writes; when it
stops, the standby takes over (the chart runs several replicas for availability).

Both replicas run in this process against one kmock, each with its own registry, memo and
peering identity; the KopfPeering object is the one the chart creates.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

import kopf
from kmock_ext import RoutewayEmulator
from operator_factories import backend, config_of, create, gateway, patch, route
from rig import TEST_SETTINGS, WAIT, eventually
from routeway_operator.kube import KubeApi
from routeway_operator.main import create_registry
from routeway_operator.settings import PeeringMode
from routeway_operator.state import OperatorState


class Replica:
    """One operator replica in its own thread and event loop, as in its own pod: kopf cancels
    every task created after it started when it exits, so two replicas cannot share a loop."""

    def __init__(self, kmock: RoutewayEmulator, identity: str, priority: int) -> None:
        self.server = str(kmock.url).rstrip("/")
        self.identity, self.priority = identity, priority
        self.memo = kopf.Memo()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"replica {identity}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.run(self._operate())

    async def _operate(self) -> None:
        registry = kopf.OperatorRegistry()
        server = self.server

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, insecure=True)

        async def connect() -> KubeApi:
            return await KubeApi.connect(server=server)

        config = replace(TEST_SETTINGS, peering=PeeringMode.REQUIRED, peering_name="routeway")
        create_registry(config, registry=registry, connect=connect)
        await kopf.operator(
            registry=registry,
            namespaces=["default"],
            stop_flag=self.stop,
            ready_flag=self.ready,
            memo=self.memo,
            identity=self.identity,
            priority=self.priority,
            peering_name="routeway",
        )

    async def started(self) -> OperatorState:
        await eventually(self.ready.is_set, what=f"{self.identity} ready")
        await eventually(lambda: getattr(self.memo, "routeway", None) is not None)
        state: OperatorState = self.memo.routeway
        return state

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.thread.join, WAIT)


async def test_only_the_leader_writes_and_the_standby_takes_over(kmock: RoutewayEmulator) -> None:
    kmock.seed(
        "kopf.dev/v1/kopfpeerings",
        "default",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "routeway"}},
    )
    leader, standby = Replica(kmock, "leader", 100), Replica(kmock, "standby", 10)
    try:
        lead, spare = await leader.started(), await standby.started()
        await eventually(
            lambda: (
                len(kmock.objects["kopf.dev/v1/kopfpeerings", "default", "routeway"].get("status") or {}) == 2
            )
        )
        await create(kmock, gateway("gw"), backend("m"), route("chat", "chat", {"m": 1}))
        await eventually(lambda: config_of(kmock)["routes"], what="the leader rendered the gateway")
        await eventually(lambda: lead.reconciler.pending == 0)  # another thread: no awaiting its events
        # A replica that is still starting may act once before it has seen a higher-priority
        # peer (harmless: writes are idempotent). From then on only the leader works:
        settled_spare = spare.reconciler.runs
        await patch(kmock, "ModelRoute", "chat", {"spec": {"backends": [{"name": "m", "weight": 2}]}})
        await eventually(
            lambda: config_of(kmock)["routes"][0]["targets"][0]["weight"] == 2,
            what="the leader rendered the change",
        )
        await eventually(lambda: lead.reconciler.pending == 0)
        assert lead.reconciler.runs > 0
        assert spare.reconciler.runs == settled_spare

        await leader.stopped()
        before = config_of(kmock)["revision"]
        await patch(kmock, "ModelRoute", "chat", {"spec": {"model": "chat-v2"}})
        await eventually(lambda: config_of(kmock)["revision"] != before, what="the standby took over")
        assert spare.reconciler.runs > 0
        assert config_of(kmock)["routes"][0]["model"] == "chat-v2"
    finally:
        await asyncio.gather(leader.stopped(), standby.stopped())
