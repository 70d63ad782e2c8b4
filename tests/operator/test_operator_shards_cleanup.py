"""Shard ConfigMaps the config no longer needs are removed: the operator against kmock.

Storage (routeway/configstore.py): a config over the budget is gzipped into shard ConfigMaps
of slot `a` or `b`, named by the manifest in the gateway's ConfigMap; each new revision goes
to the slot the live manifest does not use, and the previous manifest's shards are kept one
revision longer for a proxy that is reading them. So after every reconcile the shards in the
namespace are exactly those the current manifest names plus those the previous one named.
Matrix: inline → sharded (slot a) → fewer shards (slot b, a kept) → fewer still (slot a again:
the a-shards beyond the new count removed, b kept) → inline again (every shard removed); at
each step the config read back through the manifest is the one rendered. And a shard left
behind by an operator that stopped between writing the ConfigMap and cleaning up is removed
when the next operator reconciles, although the config itself is unchanged — inline, and
sharded: the tail of the live slot from two revisions ago goes, this manifest's shards and
every shard of the other slot (a proxy may still read the previous set) stay. Stale shards
are looked for once per gateway after start and after a write, never on a reconcile that
changes nothing (no ConfigMap LIST per resync).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
from kmock_ext import RoutewayEmulator
from operator_factories import backend, gateway, get, patch, route, seed
from rig import eventually, objects_of, running_operator, settled

from routeway.configstore import CONFIG_KEY, MANIFEST_KEY, decode_config, manifest_shards, shards_to_read
from routeway.translate import ObjectKey

BUDGET = 1400
CONFIGMAP = "routeway-gw-config"
WIDE = 60


def backend_name(i: int) -> str:
    """Incompressible names, so a route over a few dozen backends needs several shards."""
    return f"b{i}-" + hashlib.sha256(str(i).encode()).hexdigest()[:56]


def shards_present(kmock: RoutewayEmulator) -> set[str]:
    return {name for name in objects_of(kmock, "v1/configmaps") if name.startswith(f"{CONFIGMAP}-")}


def slots_of(names: Iterable[str]) -> set[str]:
    return {name[len(CONFIGMAP) + 1] for name in names}


def stored(kmock: RoutewayEmulator) -> tuple[dict[str, str], int]:
    """The config ConfigMap's data, and the number of targets of route `wide` in the config
    read back from it (through the manifest and its shards when sharded)."""
    data = get(kmock, "v1/configmaps", CONFIGMAP)["data"]
    if CONFIG_KEY in data:
        body = data[CONFIG_KEY].encode()
    else:
        shards: dict[str, Any] = {}
        for name in shards_to_read(data):
            shard = get(kmock, "v1/configmaps", name)
            shards[name] = shard["binaryData"] if shard else None
        body = decode_config(data, shards)
    (wide,) = [r for r in json.loads(body)["routes"] if r["model"] == "wide"]
    return data, len(wide["targets"])


async def widen(kmock: RoutewayEmulator, state: Any, count: int) -> dict[str, str]:
    """Route `wide` over the first `count` backends (one object changed: one revision)."""
    backends = [{"name": backend_name(i), "weight": 1} for i in range(count)]
    await patch(kmock, "ModelRoute", "wide", {"spec": {"backends": backends}})
    return await serving(kmock, state, count)


async def serving(kmock: RoutewayEmulator, state: Any, count: int) -> dict[str, str]:
    await eventually(lambda: stored(kmock)[1] == count, what=f"route wide over {count} backends")
    await settled(kmock, state)
    data, targets = stored(kmock)
    assert targets == count
    return data


def world() -> list[dict[str, Any]]:
    return [
        gateway("gw"),
        *(backend(backend_name(i)) for i in range(WIDE)),
        route("wide", "wide", {backend_name(0): 1}),
    ]


async def test_shards_follow_the_config_through_slots_and_back_inline(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock, configmap_budget=BUDGET) as state:
        data = await serving(kmock, state, 1)
        assert CONFIG_KEY in data and shards_present(kmock) == set()

        first = manifest_shards(await widen(kmock, state, WIDE))
        assert len(first) >= 4 and slots_of(first) == {"a"}
        assert shards_present(kmock) == first

        second = manifest_shards(await widen(kmock, state, WIDE // 2))
        assert slots_of(second) == {"b"} and 2 <= len(second) < len(first)
        assert shards_present(kmock) == second | first  # the previous set is kept one revision

        third = manifest_shards(await widen(kmock, state, WIDE // 4))
        assert slots_of(third) == {"a"} and len(third) < len(first)
        # slot a rewritten with fewer shards: its old tail is gone; b is the previous set
        assert shards_present(kmock) == third | second

        inline = await widen(kmock, state, 1)
        assert CONFIG_KEY in inline and MANIFEST_KEY not in inline
        assert shards_present(kmock) == set()

        again = manifest_shards(await widen(kmock, state, WIDE))  # and sharded once more
        assert shards_present(kmock) == again and len(again) == len(first)


async def test_a_shard_left_behind_by_a_stopped_operator_is_removed(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock, configmap_budget=BUDGET) as state:
        await serving(kmock, state, 1)
        labels = get(kmock, "v1/configmaps", CONFIGMAP)["metadata"]["labels"]
        owners = get(kmock, "v1/configmaps", CONFIGMAP)["metadata"]["ownerReferences"]
    # what an operator stopped after writing the inline ConfigMap, before its cleanup, leaves
    leftover = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{CONFIGMAP}-b0", "labels": labels, "ownerReferences": owners},
        "binaryData": {"part": "AAAA"},
    }
    kmock.seed("v1/configmaps", "default", leftover)
    assert shards_present(kmock) == {f"{CONFIGMAP}-b0"}
    async with running_operator(kmock, configmap_budget=BUDGET) as state:
        await serving(kmock, state, 1)
        # the cleanup follows the apply: wait for it while the operator runs
        await eventually(lambda: not shards_present(kmock), what="the leftover shard removed")
    assert shards_present(kmock) == set()


def shard_like(kmock: RoutewayEmulator, name: str) -> dict[str, Any]:
    """A shard as an operator would have written it (its labels and owner), named `name`."""
    meta = get(kmock, "v1/configmaps", CONFIGMAP)["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": meta["labels"], "ownerReferences": meta["ownerReferences"]},
        "binaryData": {"part": "AAAA"},
    }


async def test_the_live_slots_old_tail_left_by_a_stopped_operator_is_removed(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock, configmap_budget=BUDGET) as state:
        await serving(kmock, state, 1)
        first = manifest_shards(await widen(kmock, state, WIDE))
        live = manifest_shards(await widen(kmock, state, WIDE // 2))
        assert slots_of(first) == {"a"} and slots_of(live) == {"b"}
        assert shards_present(kmock) == first | live
    # An operator stopped right after writing the manifest: b's tail from two revisions ago
    # (more b shards than the live set names) is still there.
    tail = {f"{CONFIGMAP}-b{i}" for i in range(len(live), len(live) + 3)}
    for name in sorted(tail):
        kmock.seed("v1/configmaps", "default", shard_like(kmock, name))
    extra_a = f"{CONFIGMAP}-a{len(first) + 2}"  # any shard of the other slot stays
    kmock.seed("v1/configmaps", "default", shard_like(kmock, extra_a))
    async with running_operator(kmock, configmap_budget=BUDGET) as state:
        await serving(kmock, state, WIDE // 2)
        await eventually(lambda: not (shards_present(kmock) & tail), what="the live slot's old tail removed")
        await settled(kmock, state)
    assert shards_present(kmock) == live | first | {extra_a}
    assert manifest_shards(get(kmock, "v1/configmaps", CONFIGMAP)["data"]) == live


def configmap_lists(kmock: RoutewayEmulator) -> int:
    return sum(
        1
        for r in kmock.requests()
        if r.method == "GET"
        and r.url.path == "/api/v1/namespaces/default/configmaps"
        and r.params.get("labelSelector", "").startswith("routeway.dev/gateway=")  # the shard sweep
    )


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "inline"])
async def test_a_reconcile_that_changes_nothing_lists_no_configmaps(
    kmock: RoutewayEmulator, sharded: bool
) -> None:
    seed(kmock, *world())
    overrides = {"configmap_budget": BUDGET} if sharded else {}
    async with running_operator(kmock, **overrides) as state:
        await serving(kmock, state, 1)
        if sharded:
            assert manifest_shards(await widen(kmock, state, WIDE))
        before = configmap_lists(kmock)
        assert before >= 1  # the first reconcile after start looked once
        key = ObjectKey("ModelGateway", "default", "gw")
        for _ in range(3):
            runs = state.reconciler.runs_by_key[key]
            state.mark_gateway(("default", "gw"))
            await eventually(lambda r=runs: state.reconciler.runs_by_key[key] > r, what="a reconcile")
            await settled(kmock, state)
        assert configmap_lists(kmock) == before
