"""The operator killed between its writes, then a fresh operator against the same API state.

The kill is exact: kmock parks one request of the operator (`hold`), either before it takes
effect (`unapplied`: the operator dies before the write lands) or after (`applied`: the
write landed, its answer never arrived), and the kopf task is cancelled at that moment (no
stop flag, no cleanup to completion, the request abandoned). Matrix of kill points on a
first reconcile: after the credentials Secret was created, before the config ConfigMap,
after the Deployment (the last child) before any status, in the middle of the status writes;
and on an update: before and after the new ConfigMap landed.

Each case checks that the dead operator wrote nothing more, that the fresh one converges to
the state of a run without the kill (children and every status), writes at most the one
write the kill cost on top of the fault-free run's, is silent once converged, and that a
further restart writes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faults_rig import (
    converge,
    fast_kopf,
    faulty_emulator,
    reaches,
    reference,
    settle,
    world,
    writes_but_events,
)
from kmock_faults import FaultyEmulator, HoldMode
from operator_factories import patch, seed
from rig import WAIT, running_operator, start_operator

QUIET = 1.5


@pytest.fixture()
async def kmock() -> Any:
    async with faulty_emulator() as emulator:
        yield emulator


async def kill_at(
    kmock: FaultyEmulator,
    method: str,
    path: str,
    mode: HoldMode,
    before: Any = None,
    *,
    name: str | None = None,
    **overrides: Any,
) -> None:
    """Run an operator until it sends the matching request, then kill it there."""
    started, ready = await start_operator(kmock, kopf_settings=fast_kopf, **overrides)
    try:
        state = await started.wait_ready(ready)
        if before is not None:
            await converge(kmock, state)
        hold = kmock.hold(method, path, mode, name=name)
        if before is not None:
            await before(kmock)
        await asyncio.wait_for(hold.arrived.wait(), WAIT)
    finally:
        await started.kill()
    writes = len(kmock.writes())
    hold.release()
    await asyncio.sleep(0.3)  # whatever the dead operator had left would arrive now
    assert len(kmock.writes()) == writes, kmock.writes_since(writes)


async def restart_and_check(
    kmock: FaultyEmulator, expected: dict[str, Any], budget: int, **overrides: Any
) -> None:
    async with running_operator(kmock, kopf_settings=fast_kopf, **overrides) as state:
        await converge(kmock, state)
        await reaches(kmock, expected, "converged after the restart")
        assert len(writes_but_events(kmock)) <= budget, writes_but_events(kmock)
        before = len(kmock.writes())
        await asyncio.sleep(QUIET)
        await settle(kmock, state)
        assert kmock.writes_since(before) == []
    before = len(kmock.writes())
    async with running_operator(kmock, kopf_settings=fast_kopf, **overrides) as state:
        await converge(kmock, state)
    assert kmock.writes_since(before) == []


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        ("POST", "/secrets", "applied"),  # credentials created, config not yet
        ("POST", "/configmaps", "unapplied"),  # dies before the config lands
        ("POST", "/deployments", "applied"),  # every child made, no status yet
        ("PATCH", "/modelroutes/chat/status", "applied"),  # some statuses written
        ("PATCH", "/modelgateways/gw/status", "unapplied"),
    ],
)
async def test_killed_during_the_first_reconcile(
    kmock: FaultyEmulator, method: str, path: str, mode: HoldMode
) -> None:
    expected, reference_writes = await reference(world())
    seed(kmock, *world())
    await kill_at(kmock, method, path, mode)
    await restart_and_check(kmock, expected, reference_writes + (1 if mode == "unapplied" else 0))


async def new_weights(api: FaultyEmulator) -> None:
    await patch(api, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v1", "weight": 1}]}})


@pytest.mark.parametrize("mode", ["unapplied", "applied"])
async def test_killed_while_applying_a_change(kmock: FaultyEmulator, mode: HoldMode) -> None:
    expected, reference_writes = await reference(world(), new_weights)
    seed(kmock, *world())
    await kill_at(kmock, "PATCH", "/configmaps/routeway-gw-config", mode, before=new_weights)
    # The fault-free run's writes include the test's own route patch, as do ours.
    await restart_and_check(kmock, expected, reference_writes + (1 if mode == "unapplied" else 0))


SHARDED = {"configmap_budget": 300}  # a tiny budget: the config is written as shards + manifest


@pytest.mark.parametrize("first", [True, False])
async def test_killed_between_config_shards_and_their_manifest(kmock: FaultyEmulator, first: bool) -> None:
    """The shards landed, the manifest naming them did not: the next operator writes the
    manifest over the very same shards (same slot, nothing rewritten)."""
    change = None if first else new_weights
    expected, reference_writes = await reference(world(), change, **SHARDED)
    seed(kmock, *world())
    method = "POST" if first else "PATCH"
    manifest = "routeway-gw-config"
    await kill_at(kmock, method, "/configmaps", "unapplied", change, name=manifest, **SHARDED)
    assert any(name.startswith("routeway-gw-config-") for (_r, _ns, name) in kmock.objects)
    await restart_and_check(kmock, expected, reference_writes + 1, **SHARDED)
