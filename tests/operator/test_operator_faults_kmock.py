"""The misbehaving API server of kmock_faults.py does what the fault tests rely on.

Matrix: an error with and without the write applied; a parked request (unapplied: answered
503 and never applied; applied: the object exists before the answer); a watch resumed from a
resourceVersion replays a deletion; after compaction it gets ERROR 410; an open watch cut
with 410, cut to EOF, or hung (nothing delivered while it stays open).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from faults_rig import faulty_emulator
from kmock_faults import FaultyEmulator

CM = "/api/v1/namespaces/default/configmaps"


@pytest.fixture()
async def kmock() -> Any:
    async with faulty_emulator() as emulator:
        yield emulator


def exists(kmock: FaultyEmulator, name: str) -> bool:
    try:
        return not kmock.objects["v1/configmaps", "default", name].deleted
    except KeyError:
        return False


async def events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        line = await asyncio.wait_for(resp.content.readline(), 5)
        if not line:
            break
        if line.strip():
            out.append(json.loads(line))
    return out


async def test_errors_with_and_without_the_write(kmock: FaultyEmulator) -> None:
    kmock.fail("POST", "/configmaps", 503)
    kmock.fail("POST", "/configmaps", 500, applied=True)
    assert (await kmock.post(CM, json={"metadata": {"name": "a"}})).status == 503
    assert not exists(kmock, "a")
    assert (await kmock.post(CM, json={"metadata": {"name": "b"}})).status == 500
    assert exists(kmock, "b")
    assert (await kmock.post(CM, json={"metadata": {"name": "c"}})).status == 200


async def test_parked_requests(kmock: FaultyEmulator) -> None:
    unapplied = kmock.hold("POST", "/configmaps", "unapplied")
    request = asyncio.ensure_future(kmock.post(CM, json={"metadata": {"name": "a"}}))
    await asyncio.wait_for(unapplied.arrived.wait(), 5)
    unapplied.release()
    assert (await request).status == 503 and not exists(kmock, "a")

    applied = kmock.hold("POST", "/configmaps", "applied")
    request = asyncio.ensure_future(kmock.post(CM, json={"metadata": {"name": "b"}}))
    await asyncio.wait_for(applied.arrived.wait(), 5)
    assert exists(kmock, "b") and not request.done()
    applied.release()
    assert (await request).status == 200


async def test_resumed_watch_replays_deletions_and_410_after_compaction(kmock: FaultyEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a"}})
    since = kmock.resource_version
    await kmock.delete(f"{CM}/a")
    resp = await kmock.get(CM, params={"watch": "true", "resourceVersion": str(since), "timeoutSeconds": "1"})
    [event] = await events(resp, 1)
    assert event["type"] == "DELETED" and event["object"]["metadata"]["name"] == "a"

    kmock.compact()
    resp = await kmock.get(CM, params={"watch": "true", "resourceVersion": str(since), "timeoutSeconds": "1"})
    [event] = await events(resp, 1)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert await resp.content.read() == b""  # closed after it


@pytest.mark.parametrize("how", ["gone", "closed", "hung"])
async def test_cut_watches(kmock: FaultyEmulator, how: str) -> None:
    resp = await kmock.get(CM, params={"watch": "true", "resourceVersion": str(kmock.resource_version)})
    await asyncio.sleep(0.1)
    assert kmock.open_watches("/configmaps") == 1
    assert kmock.cut_watches("/configmaps", gone=how == "gone", hang=how == "hung") == 1
    assert kmock.open_watches("/configmaps") == 0
    if how == "hung":
        await kmock.post(CM, json={"metadata": {"name": "unseen"}})
        with pytest.raises(TimeoutError):  # open, silent: the event never comes
            await asyncio.wait_for(resp.content.readline(), 0.5)
        kmock.release_all()
        assert await resp.content.read() == b""
        return
    found = await events(resp, 1)
    if how == "gone":
        assert found[0]["type"] == "ERROR" and found[0]["object"]["code"] == 410
    else:
        assert found == []
    assert await resp.content.read() == b""
