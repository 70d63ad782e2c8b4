"""Rollouts in the operator, end to end against kmock, with proxy observations from a stand-in
at the one point where pods are read (rollout_standin.py).

Matrix: a route edit → a ControllerRevision, status.rollout Progressing with weights, the
ConfigMap serving a canary arm, Ready=False RolloutProgressing / bad numbers → RolledBack,
Stalled=True RolledBack naming the metric, one arm again, a Warning Event, analysis metrics /
good numbers through timed steps → promoted, Ready=True, status.proxies / promote and abort
annotations handled once and never replayed on a later rollout / undo to a revision by its
number / ControllerRevisions pruned to revisionHistoryLimit / an operator restart continues
from status.rollout / a malformed status.rollout starts afresh / an unreachable pod is
skipped. Analysis intervals are 1s; nothing asserts on time.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kmock_ext import RoutewayEmulator
from operator_factories import (
    API,
    backend,
    condition,
    config_of,
    gateway,
    get,
    is_true,
    patch,
    route,
    secret,
    seed,
)
from rig import ROUTES, eventually, objects_of, running_operator, settled
from rollout_standin import StandInProxies, proxy_pod

from routeway.rollout.revision import revision_from_document

REVISIONS = "apps/v1/controllerrevisions"
WAIT = 30.0  # several analysis intervals on a slow machine

ANALYSIS = {
    "interval": "1s",
    "window": "1m",
    "minRequests": 10,
    "failureLimit": 0,
    "onInconclusive": "Continue",
    "metrics": [{"name": "errorRate", "max": 0.05}],
}


def canary_route(steps: list[dict[str, Any]], analysis: dict[str, Any] | None = None, **spec: Any) -> dict:
    canary: dict[str, Any] = {"steps": steps}
    if analysis is not None:
        canary["analysis"] = analysis
    return route("chat", "llama", {"v1": 1}, strategy={"canary": canary}, **spec)


def world(chat: dict[str, Any]) -> list[dict[str, Any]]:
    return [gateway("gw"), backend("v1"), backend("v2"), backend("v3"), chat]


def rollout(kmock: RoutewayEmulator) -> dict[str, Any]:
    return dict((get(kmock, ROUTES, "chat") or {}).get("status", {}).get("rollout") or {})


def phase(kmock: RoutewayEmulator) -> str | None:
    return rollout(kmock).get("phase")


def revisions(kmock: RoutewayEmulator) -> dict[str, dict[str, Any]]:
    return objects_of(kmock, REVISIONS)


def served_route(kmock: RoutewayEmulator) -> dict[str, Any]:
    [chat] = config_of(kmock)["routes"]
    return dict(chat)


def events(kmock: RoutewayEmulator, reason: str) -> list[dict[str, Any]]:
    return [e for e in objects_of(kmock, "v1/events").values() if e["reason"] == reason]


async def edit(kmock: RoutewayEmulator, backends: dict[str, int]) -> None:
    body = {"spec": {"backends": [{"name": b, "weight": w} for b, w in backends.items()]}}
    await patch(kmock, "ModelRoute", "chat", body)


async def annotate(kmock: RoutewayEmulator, **annotations: str) -> None:
    body = {
        "metadata": {
            "annotations": {f"routeway.dev/{k.replace('_', '-')}": v for k, v in annotations.items()}
        }
    }
    await patch(kmock, "ModelRoute", "chat", body)


async def test_a_route_edit_starts_a_rollout_with_a_revision_and_a_canary_arm(
    kmock: RoutewayEmulator,
) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 20}, {"pause": {"duration": "1h"}}])))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable", what="first sight: Stable")
        first = rollout(kmock)["stableRevision"]
        assert [r["data"]["hash"] for r in revisions(kmock).values()] == [first]
        assert is_true(get(kmock, ROUTES, "chat"), "Ready")

        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Progressing", what="Progressing")
        await settled(kmock, state)

    status = rollout(kmock)
    canary = status["canaryRevision"]
    assert status["stableRevision"] == first and canary != first
    assert status["canaryWeight"] == 20 and status["currentStepIndex"] == 1
    assert status["weights"] == [
        {"backend": "default/v1", "arm": "stable", "weight": 80.0},
        {"backend": "default/v2", "arm": "canary", "weight": 20.0},
    ]
    chat = get(kmock, ROUTES, "chat")
    assert chat["status"]["observedGeneration"] == 2
    ready = condition(chat, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RolloutProgressing"
    assert ready["observedGeneration"] == 2
    assert condition(chat, "Reconciling")["status"] == "True"
    assert condition(chat, "Programmed")["status"] == "True"
    served = served_route(kmock)
    assert served["revision"] == first and [t["backend"] for t in served["targets"]] == ["default/v1"]
    assert served["canary"]["revision"] == canary and served["canary"]["weight"] == 20
    assert [t["backend"] for t in served["canary"]["targets"]] == ["default/v2"]
    # the snapshot: named ROUTE-HASH, labelled, owned by the route, its data the revision
    stored = revisions(kmock)
    assert set(stored) == {f"chat-{first}", f"chat-{canary}"}
    cr = stored[f"chat-{canary}"]
    assert cr["metadata"]["labels"]["routeway.dev/route"] == "chat"
    assert cr["metadata"]["ownerReferences"][0]["uid"] == chat["metadata"]["uid"]
    assert cr["revision"] == 2 and stored[f"chat-{first}"]["revision"] == 1
    assert revision_from_document(cr["data"]).hash == canary
    assert [e["type"] for e in events(kmock, "RolloutStarted")] == ["Normal"]


async def test_bad_numbers_roll_the_canary_back(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 20}, {"pause": {"duration": "1h"}}], ANALYSIS)))
    seed_pods(kmock)
    proxies = StandInProxies(kmock, canary_fails=True)
    async with running_operator(kmock, proxy_reader=proxies) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        first = rollout(kmock)["stableRevision"]
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "RolledBack", within=WAIT, what="RolledBack")
        exposed = await eventually(
            lambda: state.metrics.registry.get_sample_value(
                "routeway_rollout_analysis_total", {"route": "default/chat", "verdict": "fail"}
            ),
            what="the failed check counted",
        )

    chat = get(kmock, ROUTES, "chat")
    stalled = condition(chat, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "RolledBack"
    assert "errorRate 1" in stalled["message"] and "max 0.05" in stalled["message"], stalled
    assert condition(chat, "Ready")["status"] == "False"
    served = served_route(kmock)
    assert served.get("canary") is None and served["revision"] == first  # one arm: stable
    [warning] = events(kmock, "RolledBack")
    assert warning["type"] == "Warning" and "errorRate" in warning["message"]
    assert rollout(kmock)["history"][0]["outcome"] == "rolledBack"
    assert exposed is not None and exposed >= 1


async def test_good_numbers_and_steps_promote_the_canary(kmock: RoutewayEmulator) -> None:
    steps = [
        {"setWeight": 20},
        {"pause": {"duration": "1s"}},
        {"setWeight": 50},
        {"pause": {"duration": "1s"}},
    ]
    seed(kmock, *world(canary_route(steps, ANALYSIS)))
    seed_pods(kmock)
    proxies = StandInProxies(kmock)
    async with running_operator(kmock, proxy_reader=proxies) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Progressing")
        canary = rollout(kmock)["canaryRevision"]
        await eventually(
            lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] == canary,
            within=WAIT,
            what="promoted",
        )
        await eventually(
            lambda: get(kmock, "routeway.dev/v1alpha1/modelgateways", "gw")["status"].get("proxies") == 2
        )
        metrics = state.metrics.registry
        await eventually(
            lambda: metrics.get_sample_value(
                "routeway_rollout_phase", {"route": "default/chat", "phase": "Stable"}
            )
        )
        weight = metrics.get_sample_value("routeway_rollout_canary_weight", {"route": "default/chat"})
        stable = metrics.get_sample_value(
            "routeway_rollout_phase", {"route": "default/chat", "phase": "Stable"}
        )

    chat = get(kmock, ROUTES, "chat")
    assert is_true(chat, "Ready") and condition(chat, "Ready")["observedGeneration"] == 2
    served = served_route(kmock)
    assert served.get("canary") is None and served["revision"] == canary
    assert [t["backend"] for t in served["targets"]] == ["default/v2"]
    assert rollout(kmock)["history"][0]["outcome"] == "promoted"
    assert [e["type"] for e in events(kmock, "Promoted")] == ["Normal"]
    assert len(events(kmock, "StepAdvanced")) >= 3
    assert (weight, stable) == (0.0, 1.0)


async def test_promote_and_abort_are_handled_once_and_never_replayed(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 10}, {"pause": {}}])))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Paused", what="waits for a promote")
        ready = condition(get(kmock, ROUTES, "chat"), "Ready")
        assert ready["reason"] == "RolloutPaused"
        await annotate(kmock, promote="t1")
        await eventually(lambda: phase(kmock) == "Stable", what="promoted by hand")
        assert {"action": "promote", "token": "t1"}.items() <= rollout(kmock)["handledActions"][0].items()

        # A later rollout: the promote annotation is still there and must not promote it.
        await edit(kmock, {"v3": 1})
        await eventually(lambda: phase(kmock) == "Paused" and rollout(kmock)["canaryWeight"] == 10)
        await settled(kmock, state)
        assert phase(kmock) == "Paused"

        await annotate(kmock, abort="a1")
        await eventually(lambda: phase(kmock) == "RolledBack", what="aborted")
        stalled = condition(get(kmock, ROUTES, "chat"), "Stalled")
        assert stalled["reason"] == "RolledBack" and "aborted by hand (a1)" in stalled["message"]
        assert served_route(kmock).get("canary") is None

        # And the abort is not replayed on the next rollout either.
        await edit(kmock, {"v1": 1, "v3": 1})
        await eventually(lambda: phase(kmock) == "Paused")
        await settled(kmock, state)
    status = rollout(kmock)
    assert status["phase"] == "Paused" and status["canaryWeight"] == 10
    handled = {(h["action"], h["token"]) for h in status["handledActions"]}
    assert handled == {("promote", "t1"), ("abort", "a1")}
    assert served_route(kmock)["canary"]["weight"] == 10


async def test_undo_to_a_revision_by_its_number(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 10}, {"pause": {}}])))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        first = rollout(kmock)["stableRevision"]
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Paused")
        await annotate(kmock, promote_full="go")
        await eventually(lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] != first)
        await settled(kmock, state)
        number = revisions(kmock)[f"chat-{first}"]["revision"]

        await annotate(kmock, undo=str(number))
        await eventually(lambda: rollout(kmock).get("canaryRevision") == first, what="undo rolls out rev 1")
        await eventually(lambda: phase(kmock) == "Paused")
        assert served_route(kmock)["canary"]["revision"] == first
        await annotate(kmock, promote_full="back")
        await eventually(lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] == first)
        await settled(kmock, state)
    assert served_route(kmock)["revision"] == first
    assert [t["backend"] for t in served_route(kmock)["targets"]] == ["default/v1"]


async def test_revisions_are_pruned_to_the_history_limit(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(route("chat", "llama", {"v1": 1}, revisionHistoryLimit=2)))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        hashes = [rollout(kmock)["stableRevision"]]
        for backends in ({"v2": 1}, {"v3": 1}, {"v1": 1, "v2": 1}, {"v1": 1, "v3": 1}):
            await edit(kmock, backends)
            await eventually(lambda: rollout(kmock)["stableRevision"] not in hashes)
            hashes.append(rollout(kmock)["stableRevision"])
        await settled(kmock, state)
    kept = {cr["data"]["hash"] for cr in revisions(kmock).values()}
    assert kept == set(hashes[-2:])  # without a canary strategy each edit applies at once
    assert [h["revision"] for h in rollout(kmock)["history"]] == hashes[:-3:-1]
    assert sorted(cr["revision"] for cr in revisions(kmock).values()) == [4, 5]


async def test_a_restarted_operator_continues_from_status(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}])))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Paused")
        await settled(kmock, state)
    before = rollout(kmock)
    writes = len(kmock.writes())

    async with running_operator(kmock) as state:
        await state.reconciler.wait_idle()
        await settled(kmock, state)
        assert len(kmock.writes()) == writes  # read back from status: nothing to change
        await annotate(kmock, promote="p1")
        await eventually(lambda: phase(kmock) == "Paused" and rollout(kmock)["canaryWeight"] == 60)
        await settled(kmock, state)
    after = rollout(kmock)
    assert after["canaryRevision"] == before["canaryRevision"] and after["startedAt"] == before["startedAt"]
    assert served_route(kmock)["canary"]["weight"] == 60


async def test_a_malformed_rollout_status_starts_afresh_from_the_spec(kmock: RoutewayEmulator) -> None:
    chat = canary_route([{"setWeight": 10}, {"pause": {}}])
    chat["status"] = {"rollout": {"phase": "Sideways", "stableRevision": "nope"}}
    seed(kmock, *world(chat))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        await settled(kmock, state)
    assert is_true(get(kmock, ROUTES, "chat"), "Ready")
    assert served_route(kmock)["revision"] == rollout(kmock)["stableRevision"]


async def test_an_unreachable_pod_is_skipped(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(canary_route([{"setWeight": 20}, {"pause": {"duration": "1h"}}], ANALYSIS)))
    seed_pods(kmock)
    proxies = StandInProxies(kmock, canary_fails=True, unreachable={"proxy-b"})
    async with running_operator(kmock, proxy_reader=proxies):
        await eventually(lambda: phase(kmock) == "Stable")
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "RolledBack", within=WAIT, what="judged on proxy-a alone")
        await eventually(
            lambda: get(kmock, "routeway.dev/v1alpha1/modelgateways", "gw")["status"].get("proxies") == 1
        )
    assert {instance for instance, _ in proxies.counts} == {"proxy-a"}


def seed_pods(kmock: RoutewayEmulator) -> None:
    for name, ip in (("proxy-a", "10.0.0.1"), ("proxy-b", "10.0.0.2")):
        kmock.seed("v1/pods", "default", proxy_pod(name, ip))
    kmock.seed("v1/pods", "default", proxy_pod("proxy-starting", "10.0.0.3", ready=False))


assert API  # the collection prefix the factories patch through


async def test_a_backend_edit_is_rolled_out_with_both_credentials_served(kmock: RoutewayEmulator) -> None:
    """The stable arm pins the backend's old spec and its credential; the Secret holds both."""
    v1 = backend("v1", url="http://vllm:8000/v1", apiKeySecretRef={"name": "old", "key": "token"})
    seed(
        kmock,
        secret("old", token="sk-old-1"),
        secret("new", token="sk-new-2"),
        *world(canary_route([{"setWeight": 20}, {"pause": {"duration": "1h"}}])),
    )
    seed(kmock, v1)
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        body = {"spec": {"apiKeySecretRef": {"name": "new", "key": "token"}}}
        await patch(kmock, "ModelBackend", "v1", body)
        await eventually(lambda: phase(kmock) == "Progressing", what="a backend edit is a new revision")
        await settled(kmock, state)
    served = served_route(kmock)
    [pinned] = served["pinnedBackends"]
    assert pinned["id"] == "default/v1" and pinned["credentialRef"] == "default/old/token"
    creds = get(kmock, "v1/secrets", "routeway-gw-credentials")["data"]
    values = {base64.b64decode(v).decode() for v in creds.values()}
    assert values == {"sk-old-1", "sk-new-2"}
    stored = [dict(cr) for cr in revisions(kmock).values()]
    assert "sk-old-1" not in json.dumps(dict(get(kmock, ROUTES, "chat"))) + json.dumps(stored, default=dict)


async def test_a_second_undo_to_the_same_revision_is_handled(kmock: RoutewayEmulator) -> None:
    """`routeway rollout undo chat --to-revision 1` twice, days apart: the second one must undo
    too. Each value is handled once (a bare `1` left on the route never undoes a later
    rollout), so the CLI writes `1@TOKEN`: a new value each time."""
    seed(kmock, *world(canary_route([{"setWeight": 10}, {"pause": {}}])))
    async with running_operator(kmock) as state:
        await eventually(lambda: phase(kmock) == "Stable")
        first = rollout(kmock)["stableRevision"]
        await edit(kmock, {"v2": 1})
        await eventually(lambda: phase(kmock) == "Paused")
        await annotate(kmock, promote_full="go")
        await eventually(lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] != first)
        await settled(kmock, state)
        number = str(revisions(kmock)[f"chat-{first}"]["revision"])
        await annotate(kmock, undo=f"{number}@first")  # the first undo: a rollout of revision 1, promoted
        await eventually(lambda: rollout(kmock).get("canaryRevision") == first)
        await eventually(lambda: phase(kmock) == "Paused")
        await annotate(kmock, promote_full="back")
        await eventually(lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] == first)

        await edit(kmock, {"v3": 1})  # later: a new rollout that someone wants undone
        await eventually(lambda: phase(kmock) == "Paused" and rollout(kmock)["canaryRevision"] != first)
        await settled(kmock, state)
        await annotate(kmock, undo=f"{number}@first")  # the same value again: handled already
        await settled(kmock, state)
        assert phase(kmock) == "Paused", "a value handled once is never replayed on a later rollout"
        await annotate(kmock, undo=f"{number}@second")  # what the CLI sets: a fresh token
        await eventually(
            lambda: phase(kmock) == "Stable" and rollout(kmock)["stableRevision"] == first,
            within=5.0,
            what="the second undo back to revision 1 (a Git revert of the v3 rollout)",
        )
