"""The operator under API faults: it converges to what it reaches without faults, loses no
status, and writes nothing once converged, nor after a restart against converged state.

Matrix (each against the real kopf operator and kmock_faults.FaultyEmulator):
- 409 Conflict on creates (one never applied, one applied by a "racing writer"), on patches
  of children, on status patches;
- 500/503 on the operator's own reads (GET of a child), on kopf's lists and watch requests,
  on status writes, and a write applied whose answer was lost;
- watch streams closed early, closed with ERROR 410 Gone, and hung (open, delivering
  nothing), with changes made while the operator was not listening, including a deletion,
  and a compacted history (410 on resume, so kopf re-lists);
- the operator killed between its writes: test_operator_faults_restart.py.

"No needless writes" is measured twice: the faulted run writes at most the fault-free
run's writes plus one repeat per injected fault, and once converged nothing is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faults_rig import (
    converge,
    differences,
    fast_kopf,
    faulty_emulator,
    reaches,
    reference,
    settle,
    snapshot,
    world,
    writes_but_events,
)
from kmock_faults import FaultyEmulator
from operator_factories import config_of, create, delete, patch, route, seed
from rig import eventually, running_operator

QUIET = 1.5  # longer than kopf's watch inactivity timeout in these tests (fast_kopf)


@pytest.fixture()
async def kmock() -> Any:
    async with faulty_emulator() as emulator:
        yield emulator


async def assert_quiet(kmock: FaultyEmulator, state: Any) -> None:
    """Converged means silent: no write over a period in which kopf reconnects its watches."""
    before = len(kmock.writes())
    await asyncio.sleep(QUIET)
    await settle(kmock, state)
    assert kmock.writes_since(before) == []


async def assert_restart_writes_nothing(kmock: FaultyEmulator) -> None:
    before = len(kmock.writes())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
    assert kmock.writes_since(before) == []


async def test_conflicts_on_creates_and_status_patches(kmock: FaultyEmulator) -> None:
    expected, reference_writes = await reference(world())
    faults = [
        kmock.fail("POST", "/configmaps", 409),  # refused, nothing created
        kmock.fail("POST", "/deployments", 409, applied=True),  # "someone else" created it
        kmock.fail("POST", "/services", 409, times=3),  # create-or-patch gives up: retried later
        kmock.fail("PATCH", "/modelroutes/chat/status", 409, times=2),
        kmock.fail("PATCH", "/modelgateways/gw/status", 409),
        kmock.fail("PATCH", "/modelclients/team/status", 409),
    ]
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        assert all(f.times == 0 for f in faults)
        assert differences(snapshot(kmock), expected) == []
        injected = 1 + 1 + 3 + 2 + 1 + 1
        assert len(writes_but_events(kmock)) <= reference_writes + injected
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)


async def test_conflicts_on_child_patches(kmock: FaultyEmulator) -> None:
    async def heavier(api: FaultyEmulator) -> None:
        await patch(api, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v1", "weight": 1}]}})
        await patch(api, "ModelGateway", "gw", {"spec": {"replicas": 3}})

    expected, _ = await reference(world(), heavier)
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        kmock.fail("PATCH", "/configmaps/routeway-gw-config", 409, times=2)
        kmock.fail("PATCH", "/deployments/routeway-gw", 409, applied=True)
        await heavier(kmock)
        await converge(kmock, state)
        await reaches(kmock, expected, "the changes are served", mask_first_revisions=True)
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)


async def test_server_errors_on_reads_lists_watches_and_writes(kmock: FaultyEmulator) -> None:
    expected, reference_writes = await reference(world())
    faults = [
        kmock.fail("GET", "/configmaps/routeway-gw-config", 500),  # the operator's own read
        kmock.fail("GET", "/secrets/upstream", 503),  # credentials read
        kmock.fail("GET", "/modelroutes", 503, times=2, watch=False),  # kopf's list
        kmock.fail("GET", "/modelbackends", 500, watch=True),  # kopf's watch request
        kmock.fail("POST", "/secrets", 500, applied=True),  # created; the answer was lost
        kmock.fail("POST", "/serviceaccounts", 503),
        kmock.fail("PATCH", "/modelroutes/second/status", 500),
        kmock.fail("PATCH", "/modelbackends/llama-v2/status", 503),
        # Outlasts the API client's own repeats: the reconcile fails and is retried; only
        # the gateway's status says so meanwhile (one write), not every route's and client's.
        kmock.fail("POST", "/poddisruptionbudgets", 503, times=4),
    ]
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        assert all(f.times == 0 for f in faults)
        assert differences(snapshot(kmock), expected) == []
        # one repeat per refused write (4 single ones, 4 of the PDB) and the gateway's report
        assert len(writes_but_events(kmock)) <= reference_writes + 4 + 4 + 1, writes_but_events(kmock)
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)


async def change_while_away(api: FaultyEmulator) -> None:
    """A spec change, a deletion and a creation: what a watch gap can hide."""
    await patch(api, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v1", "weight": 1}]}})
    await delete(api, "ModelRoute", "second")
    await create(api, route("third", "third-model", {"llama-v1": 1}))


@pytest.mark.parametrize("how", ["closed", "gone", "hung"])
async def test_changes_made_while_a_watch_was_broken_are_not_lost(kmock: FaultyEmulator, how: str) -> None:
    expected, _ = await reference(world(), change_while_away)
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        # The routes' watch breaks; kopf's next request for routes waits until released, so
        # the changes below happen while nothing of the operator listens to routes.
        reconnect = kmock.hold("GET", "/modelroutes", "delayed")
        assert kmock.cut_watches("/modelroutes", gone=how == "gone", hang=how == "hung") == 1
        if how == "hung":
            await change_while_away(kmock)  # events go nowhere until kopf gives up on the stream
        await asyncio.wait_for(reconnect.arrived.wait(), 10)
        if how != "hung":
            await change_while_away(kmock)
        reconnect.release()
        # closed, hung: kopf resumes from its last version and gets every change, deletion
        # included; gone: kopf lists afresh and the deletion is found by the operator's audit
        # after the listing. Either way (and in the reference run, which saw the changes one
        # by one) the revision that first served a route's generation depends on timing.
        await reaches(kmock, expected, "the changes are served", mask_first_revisions=True)
        await settle(kmock, state)
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)


async def test_a_relist_after_compaction_forgets_what_was_deleted_meanwhile(kmock: FaultyEmulator) -> None:
    expected, _ = await reference(world(), change_while_away)
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        resume = kmock.hold("GET", "/modelroutes", "delayed", watch=True)
        assert kmock.cut_watches("/modelroutes") == 1
        await asyncio.wait_for(resume.arrived.wait(), 10)
        await change_while_away(kmock)
        kmock.compact()  # the resume gets 410 Gone: kopf lists routes afresh
        resume.release()
        await reaches(kmock, expected, "the changes are served", mask_first_revisions=True)
        await settle(kmock, state)
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)


async def delete_secret_and_route(api: FaultyEmulator) -> None:
    await delete(api, "ModelRoute", "second")
    resp = await api.delete("/api/v1/namespaces/default/secrets/upstream")
    assert resp.status == 200


async def test_a_deletion_missed_then_recreated_is_served_again(kmock: FaultyEmulator) -> None:
    """A Secret and a route deleted during a re-list are forgotten (the backend reports the
    Secret missing); the route created again under the same name is served again."""
    missing, _ = await reference(world(), delete_secret_and_route)
    seed(kmock, *world())
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        relists = [kmock.hold("GET", kind, "delayed", watch=False) for kind in ("/modelroutes", "/secrets")]
        assert kmock.cut_watches("/modelroutes", gone=True) == 1
        assert kmock.cut_watches("/secrets", gone=True) == 1
        await asyncio.wait_for(asyncio.gather(*(r.arrived.wait() for r in relists)), 10)
        await delete_secret_and_route(kmock)
        for relist in relists:
            relist.release()
        await reaches(kmock, missing, "the deletions are noticed", mask_first_revisions=True)
        await settle(kmock, state)
        assert state.relist is not None and state.relist.ghosts.of("ModelRoute") == {("default", "second")}

        await create(kmock, route("second", "second-model", {"llama-v2": 1}))
        await eventually(
            lambda: "second-model" in {r["model"] for r in config_of(kmock)["routes"]},
            what="the re-created route is served",
        )
        assert state.relist.ghosts.of("ModelRoute") == set()


@pytest.mark.parametrize(
    "path",
    [
        "/apis/apps/v1/namespaces/default/deployments/routeway-gw",
        "/api/v1/namespaces/default/configmaps/routeway-gw-config",
        "/api/v1/namespaces/default/secrets/routeway-gw-credentials",
    ],
)
async def test_a_child_deleted_while_its_watch_was_down_is_made_again(
    kmock: FaultyEmulator, path: str
) -> None:
    """No DELETED event, and kopf's re-list simply lacks it (the API server restarted and
    compacted: every watch ends with 410): the operator still notices."""
    expected, _ = await reference(world())
    seed(kmock, *world())
    plural = path.rsplit("/", 2)[-2]
    async with running_operator(kmock, kopf_settings=fast_kopf) as state:
        await converge(kmock, state)
        assert kmock.cut_watches(f"/{plural}", hang=True) == 1  # its events go nowhere
        assert (await kmock.delete(path)).status == 200
        kmock.compact()  # so its watch cannot resume (kopf re-lists it, empty)
        assert kmock.cut_watches(gone=True) >= 10  # and every other watch ends with 410
        await reaches(kmock, expected, "the child is made again")
        await settle(kmock, state)
        await assert_quiet(kmock, state)
    await assert_restart_writes_nothing(kmock)
