"""The kmock extension behaves like an API server where the operator depends on it.

Matrix: server metadata (uid, resourceVersion, generation, creationTimestamp, generateName),
status subresource split, no-op patches, resourceVersion preconditions, PUT, watch
(true/True/1, resourceVersion, timeoutSeconds, selectors), list shape, namespaces URL,
owner-reference garbage collection.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kmock_ext import RoutewayEmulator, match_fields, match_labels

CM = "/api/v1/namespaces/default/configmaps"
ROUTES = "/apis/routeway.dev/v1alpha1/namespaces/default/modelroutes"


async def _json(resp: aiohttp.ClientResponse) -> dict:
    return json.loads(await resp.read())


async def test_create_fills_server_metadata(kmock: RoutewayEmulator) -> None:
    resp = await kmock.post(CM, json={"metadata": {"name": "a"}, "data": {"k": "v"}})
    obj = await _json(resp)
    assert resp.status == 200
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert "generation" not in meta and meta["namespace"] == "default"  # core kinds have none
    assert int(meta["resourceVersion"]) == kmock.resource_version
    again = await kmock.post(CM, json={"metadata": {"name": "a"}})
    assert again.status == 409


async def test_generate_name_gives_distinct_names(kmock: RoutewayEmulator) -> None:
    names = set()
    for _ in range(3):
        obj = await _json(await kmock.post(CM, json={"metadata": {"generateName": "ev-"}}))
        names.add(obj["metadata"]["name"])
    assert len(names) == 3 and all(n.startswith("ev-") for n in names)


async def test_generation_bumps_on_spec_not_on_status_or_metadata(kmock: RoutewayEmulator) -> None:
    await kmock.post(ROUTES, json={"metadata": {"name": "r"}, "spec": {"model": "m"}, "status": {"x": 1}})
    obj = kmock.objects["routeway.dev/v1alpha1/modelroutes", "default", "r"]
    assert "status" not in obj  # status is ignored on create with a status subresource
    await kmock.patch(f"{ROUTES}/r", json={"metadata": {"labels": {"a": "b"}}})
    assert obj["metadata"]["generation"] == 1
    await kmock.patch(f"{ROUTES}/r/status", json={"status": {"ok": True}, "spec": {"model": "hacked"}})
    assert obj["metadata"]["generation"] == 1
    assert obj["spec"]["model"] == "m" and obj["status"] == {"ok": True}
    await kmock.patch(f"{ROUTES}/r", json={"spec": {"model": "n"}, "status": {"ok": False}})
    assert obj["metadata"]["generation"] == 2 and obj["status"] == {"ok": True}


async def test_noop_patch_changes_nothing(kmock: RoutewayEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a"}, "data": {"k": "v"}})
    rv = kmock.resource_version
    resp = await kmock.patch(f"{CM}/a", json={"data": {"k": "v"}})
    assert resp.status == 200 and kmock.resource_version == rv


async def test_stale_resource_version_conflicts(kmock: RoutewayEmulator) -> None:
    obj = await _json(await kmock.post(CM, json={"metadata": {"name": "a"}}))
    rv = obj["metadata"]["resourceVersion"]
    await kmock.patch(f"{CM}/a", json={"data": {"x": "1"}})
    resp = await kmock.patch(f"{CM}/a", json={"metadata": {"resourceVersion": rv}, "data": {"x": "2"}})
    assert resp.status == 409


async def test_put_replaces(kmock: RoutewayEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}})
    resp = await kmock.put(f"{CM}/a", json={"metadata": {"name": "a"}, "data": {"x": "3"}})
    assert resp.status == 200
    assert dict(kmock.objects["v1/configmaps", "default", "a"]["data"]) == {"x": "3"}


async def test_list_has_kind_and_resource_version_and_selectors(kmock: RoutewayEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a", "labels": {"app": "x"}}})
    await kmock.post(CM, json={"metadata": {"name": "b", "labels": {"app": "y"}}})
    body = await _json(await kmock.get(CM, params={"labelSelector": "app=x"}))
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == str(kmock.resource_version)
    assert [i["metadata"]["name"] for i in body["items"]] == ["a"]
    body = await _json(await kmock.get(CM, params={"fieldSelector": "metadata.name=b"}))
    assert [i["metadata"]["name"] for i in body["items"]] == ["b"]


async def _watch_lines(kmock: RoutewayEmulator, params: dict[str, str], count: int) -> list[dict]:
    events = []
    async with kmock.get(CM, params=params) as resp:
        async for line in resp.content:
            if line.strip():
                events.append(json.loads(line))
                if len(events) == count:
                    break
    return events


@pytest.mark.parametrize("flag", ["true", "True", "1"])
async def test_watch_flag_spellings_and_selectors(kmock: RoutewayEmulator, flag: str) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a"}})
    task = asyncio.create_task(_watch_lines(kmock, {"watch": flag, "fieldSelector": "metadata.name=b"}, 2))
    await asyncio.sleep(0)
    await kmock.post(CM, json={"metadata": {"name": "b"}})
    await kmock.patch(f"{CM}/a", json={"data": {"x": "1"}})
    await kmock.patch(f"{CM}/b", json={"data": {"x": "1"}})
    events = await asyncio.wait_for(task, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
    ]


async def test_watch_from_resource_version_does_not_replay(kmock: RoutewayEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "old"}})
    since = str(kmock.resource_version)
    task = asyncio.create_task(_watch_lines(kmock, {"watch": "true", "resourceVersion": since}, 1))
    await asyncio.sleep(0)
    await kmock.post(CM, json={"metadata": {"name": "new"}})
    events = await asyncio.wait_for(task, 5)
    assert [e["object"]["metadata"]["name"] for e in events] == ["new"]


async def test_watch_ends_after_timeout_seconds(kmock: RoutewayEmulator) -> None:
    async with kmock.get(CM, params={"watch": "true", "timeoutSeconds": "0"}) as resp:
        assert await asyncio.wait_for(resp.read(), 5) == b""


async def test_namespaces_urls(kmock: RoutewayEmulator) -> None:
    body = await _json(await kmock.get("/api/v1/namespaces"))
    assert [i["metadata"]["name"] for i in body["items"]] == ["default"]
    one = await _json(await kmock.get("/api/v1/namespaces/default"))
    assert one["metadata"]["name"] == "default" and one["metadata"]["uid"]


async def test_owner_reference_garbage_collection(kmock: RoutewayEmulator) -> None:
    owner = await _json(await kmock.post(ROUTES, json={"metadata": {"name": "r"}, "spec": {}}))
    ref = {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelRoute",
        "name": "r",
        "uid": owner["metadata"]["uid"],
    }
    await kmock.post(CM, json={"metadata": {"name": "child", "ownerReferences": [ref]}})
    await kmock.post(CM, json={"metadata": {"name": "other"}})
    resp = await kmock.delete(f"{ROUTES}/r")
    assert resp.status == 200
    assert kmock.objects["v1/configmaps", "default", "child"].deleted
    assert not kmock.objects["v1/configmaps", "default", "other"].deleted


async def test_finalizers_delay_deletion(kmock: RoutewayEmulator) -> None:
    await kmock.post(CM, json={"metadata": {"name": "a", "finalizers": ["x/y"]}})
    await kmock.delete(f"{CM}/a")
    obj = kmock.objects["v1/configmaps", "default", "a"]
    assert not obj.deleted and obj["metadata"]["deletionTimestamp"]
    await kmock.patch(f"{CM}/a", json={"metadata": {"finalizers": None}})
    assert obj.deleted


def test_selector_matching() -> None:
    labels = {"app": "x", "tier": "web"}
    assert match_labels("app=x,tier in (web, db)", labels)
    assert not match_labels("app!=x", labels)
    assert match_labels("!missing,app", labels)
    assert not match_labels("tier notin (web)", labels)
    assert match_fields("metadata.name=a", {"metadata": {"name": "a"}})
    assert not match_fields("metadata.name!=a", {"metadata": {"name": "a"}})


async def test_injected_failures_change_nothing(kmock: RoutewayEmulator) -> None:
    kmock.inject_failure("POST", "/configmaps", 503, times=1)
    assert (await kmock.post(CM, json={"metadata": {"name": "a"}})).status == 503
    assert ("v1/configmaps", "default", "a") not in {
        (str(r.group + "/" if r.group else "") + f"{r.version}/{r.plural}", n, m) for r, n, m in kmock.objects
    }
    assert (await kmock.post(CM, json={"metadata": {"name": "a"}})).status == 200


async def test_failed_json_patch_test_is_422(kmock: RoutewayEmulator) -> None:
    obj = await _json(await kmock.post(CM, json={"metadata": {"name": "a"}}))
    stale = str(int(obj["metadata"]["resourceVersion"]) - 1)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/data", "value": {}},
    ]
    resp = await kmock.patch(
        f"{CM}/a", data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
    )
    assert resp.status == 422
