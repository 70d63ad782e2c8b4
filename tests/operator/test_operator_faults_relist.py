"""The re-list audit (relist.py) on its own: what it hides, and when it decides nothing.

Matrix: keys the index holds and the API lacks are hidden and reported once, as keys and
among reverse-index values, and shown again by a later event; a failed or impossible listing
hides nothing (tried again soon when transient, at the next resync when forbidden);
namespace patterns are listed cluster-wide.
"""

from __future__ import annotations

from typing import Any

import pytest
from faults_rig import faulty_emulator
from kmock_faults import FaultyEmulator
from operator_factories import route, seed
from routeway_operator.kube import KubeApi
from routeway_operator.relist import HidingIndex, RelistAudit

ROUTE = "ModelRoute"
RESOURCES = {ROUTE: ("routeway.dev/v1alpha1", "modelroutes")}
A, B, GONE = ("default", "a"), ("default", "b"), ("default", "gone")


@pytest.fixture()
async def kmock() -> Any:
    async with faulty_emulator() as emulator:
        seed(emulator, route("a", "m-a", {"x": 1}), route("b", "m-b", {"x": 1}))
        yield emulator


async def audit_of(
    kmock: FaultyEmulator, index: dict[Any, list[Any]], namespaces: tuple[str, ...] = ("default",)
) -> tuple[RelistAudit, list[Any], KubeApi]:
    api = await KubeApi.connect(server=str(kmock.url).rstrip("/"))
    api = KubeApi(api._client, backoffs=(0.01,))
    deleted: list[Any] = []
    audit = RelistAudit(api, RESOURCES, {ROUTE: index}, namespaces, lambda kind, key: deleted.append(key))
    return audit, deleted, api


async def test_what_the_api_lacks_is_hidden_until_seen_again(kmock: FaultyEmulator) -> None:
    index: dict[Any, list[Any]] = {A: ["entry a"], B: ["entry b"], GONE: ["entry gone"]}
    audit, deleted, api = await audit_of(kmock, index)
    try:
        await audit.audit(ROUTE)
        await audit.audit(ROUTE)  # reported once, not at every audit
    finally:
        await api.close()
    assert deleted == [GONE]
    primary = HidingIndex(index, audit.ghosts, ROUTE, by_key=True)
    reverse = HidingIndex({("default", "gw"): [A, GONE]}, audit.ghosts, ROUTE, by_key=False)
    assert primary.get(GONE) is None and primary.get(A) == ["entry a"] and set(primary) == {A, B}
    assert list(reverse.get(("default", "gw"))) == [A]

    audit.seen(ROUTE, GONE, "ADDED")  # created again under the same name
    assert primary.get(GONE) == ["entry gone"]
    assert list(reverse.get(("default", "gw"))) == [A, GONE]


async def test_a_failed_listing_hides_nothing(kmock: FaultyEmulator) -> None:
    index: dict[Any, list[Any]] = {A: ["a"], GONE: ["gone"]}
    audit, deleted, api = await audit_of(kmock, index)
    try:
        kmock.fail("GET", "/modelroutes", 503, times=2, watch=False)  # outlasts one repeat
        await audit.audit(ROUTE)
        assert deleted == [] and audit.ghosts.of(ROUTE) == set()
        assert audit.audits == 0 and ROUTE in audit._timers  # to be tried again soon
        retry = audit._timers[ROUTE]

        kmock.fail("GET", "/modelroutes", 403, watch=False)  # no right to list: no retry loop
        await audit.audit(ROUTE)
        assert deleted == [] and audit.audits == 0
        assert audit._timers[ROUTE] is retry  # not armed again
    finally:
        await audit.close()
        await api.close()


async def test_a_kind_that_cannot_be_listed_hides_nothing(kmock: FaultyEmulator) -> None:
    index: dict[Any, list[Any]] = {GONE: ["gone"]}
    audit, deleted, api = await audit_of(kmock, index)
    audit._resources[ROUTE] = ("routeway.dev/v1alpha1", "nosuchkinds")
    try:
        await audit.audit(ROUTE)
    finally:
        await audit.close()
        await api.close()
    assert deleted == []


async def test_namespace_patterns_are_listed_cluster_wide(kmock: FaultyEmulator) -> None:
    index: dict[Any, list[Any]] = {A: ["a"], GONE: ["gone"]}
    audit, deleted, api = await audit_of(kmock, index, namespaces=("def*",))
    try:
        await audit.audit(ROUTE)
    finally:
        await api.close()
    assert deleted == [GONE]
    lists = [r.url.path for r in kmock._requests if r.method == "GET"]
    assert lists == ["/apis/routeway.dev/v1alpha1/modelroutes"]
