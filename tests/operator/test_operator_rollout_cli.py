"""`routeway rollout` in cluster mode, as a process, against kmock (the stricter emulator).

The operator's rollout adapter is not merged yet, so its part — read the pinned annotation,
handle it once, echo the token in `status.rollout.handledActions`, post `ActionRefused` with
the reason — is played by `StandIn`, which runs the real rollout machine (routeway.rollout.step)
on the route's `status.rollout` document.

Matrix: status from status.rollout with the spec's steps, as text and as `-o json`; the
namespace from the kubeconfig context, `--context`, `-n` / each action's merge patch sets
exactly its pinned annotation (a fresh token; undo: the revision and a fresh token) and nothing else, then the
outcome once the token is echoed / a refused action exits 1 with the reason from the Event /
no operator: `--timeout` runs out (exit 1), `--no-wait` (exit 0) / a missing route, a route
without status.rollout, an API server that cannot be reached: exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock_ext import RoutewayEmulator
from operator_factories import API, create, get, route

from routeway.rollout import (
    Action,
    Inputs,
    RevisionRef,
    policy_from_spec,
    state_from_document,
    state_to_document,
    step,
)

ROUTEWAY = str(Path(sys.executable).parent / "routeway")
T0 = 1767225600.0
STRATEGY: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "5m"}}]}
}
POLICY = policy_from_spec({"strategy": STRATEGY})
V1 = RevisionRef("r1", ("team/a",))
V2 = RevisionRef("r2", ("team/b",))
TOKEN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
ACTIONS = ("promote", "promote-full", "abort", "retry", "undo")
RESOURCE = "routeway.dev/v1alpha1/modelroutes"


def chat(namespace: str = "team") -> dict[str, Any]:
    obj = route("chat", "chat", {"b": 100}, strategy=STRATEGY)
    obj["metadata"]["namespace"] = namespace
    return obj


async def seed_route(kmock: RoutewayEmulator, *, namespace: str = "team", rollout: bool = True) -> None:
    """default/chat with r2 paused at its `pause: {}` step, as the operator would have left it."""
    await create(kmock, chat(namespace), namespace=namespace)
    if rollout:
        first = step(None, Inputs(V1, POLICY, T0)).state
        state = step(first, Inputs(V2, POLICY, T0 + 1)).state
        await write_status(kmock, namespace, state_to_document(state))


async def write_status(kmock: RoutewayEmulator, namespace: str, document: dict[str, Any]) -> None:
    resp = await kmock.patch(
        f"{API}/{namespace}/modelroutes/chat/status", json={"status": {"rollout": document}}
    )
    assert resp.status == 200, await resp.text()


class StandIn:
    """The operator's part of an action, with the real machine: an annotation whose token is
    not handled yet is stepped as an Action (undo's token is its revision, here)."""

    def __init__(self, kmock: RoutewayEmulator, namespace: str = "team") -> None:
        self.kmock = kmock
        self.namespace = namespace
        self.now = T0 + 10

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(0.02)

    async def once(self) -> None:
        obj = get(self.kmock, RESOURCE, "chat", self.namespace)
        state = state_from_document(obj["status"]["rollout"])
        annotations = obj["metadata"].get("annotations") or {}
        for kind in ACTIONS:
            value = annotations.get(f"routeway.dev/{kind}")
            revision = value.split("@", 1)[0] if kind == "undo" and value else None
            action = Action(kind, value, revision) if value else None  # type: ignore[arg-type]
            if action is None or state.was_handled(action):
                continue
            self.now += 1
            decision = step(state, Inputs(V2, POLICY, self.now, actions=(action,)))
            await write_status(self.kmock, self.namespace, state_to_document(decision.state))
            for event in decision.events:
                if event.reason == "ActionRefused":
                    await self.post_event(event.reason, event.message)
            return

    async def post_event(self, reason: str, message: str) -> None:
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "chat."},
            "involvedObject": {"kind": "ModelRoute", "name": "chat", "namespace": self.namespace},
            "reason": reason,
            "message": message,
            "type": "Warning",
        }
        resp = await self.kmock.post(f"/api/v1/namespaces/{self.namespace}/events", json=event)
        assert resp.status == 200, await resp.text()


@contextlib.asynccontextmanager
async def operator_stand_in(kmock: RoutewayEmulator, namespace: str = "team") -> AsyncIterator[StandIn]:
    stand_in = StandIn(kmock, namespace)
    task = asyncio.create_task(stand_in.run())
    try:
        yield stand_in
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_kubeconfig(path: Path, server: str) -> Path:
    """Two contexts on `server`: the current one in namespace team, `other` in default."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "me", "namespace": "team"}},
            {"name": "other", "context": {"cluster": "kmock", "user": "me"}},
        ],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def kubeconfig(kmock: RoutewayEmulator, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))


@pytest.fixture()
def unreachable(tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "unreachable", "http://127.0.0.1:9")


async def cli(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        ROUTEWAY,
        "rollout",
        *args,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_writes(kmock: RoutewayEmulator, before: int) -> list[Any]:
    return [r for r in kmock.writes()[before:] if "/status" not in str(r.url) and "/events" not in str(r.url)]


async def test_status_reads_status_rollout_with_the_spec_steps(
    kmock: RoutewayEmulator, kubeconfig: Path
) -> None:
    await seed_route(kmock)
    code, out, err = await cli(kubeconfig, "status", "chat")  # namespace team: the current context's
    assert (code, err) == (0, "")
    assert "Route:    team/chat\nPhase:    Paused\n" in out
    assert "Stable:   r1\nCanary:   r2\nStep:     2/4\n" in out
    assert (
        "  ✔ 1. setWeight 10%\n  ‖ 2. pause (until promote)  (waiting for promote)\n  ○ 3. setWeight 50%\n"
        in out
    )
    code, out, _ = await cli(kubeconfig, "status", "team/chat", "-o", "json")
    obj = get(kmock, RESOURCE, "chat", "team")
    assert code == 0
    assert json.loads(out) == {
        "route": "team/chat",
        **obj["status"]["rollout"],
        "steps": STRATEGY["canary"]["steps"],
    }


async def test_the_namespace_from_context_and_flags(kmock: RoutewayEmulator, kubeconfig: Path) -> None:
    await seed_route(kmock, namespace="default")
    code, _, err = await cli(kubeconfig, "status", "chat")
    assert (code, err) == (1, "error: modelroute team/chat not found\n")
    assert (await cli(kubeconfig, "status", "chat", "--context", "other"))[0] == 0
    assert (await cli(kubeconfig, "status", "chat", "-n", "default"))[0] == 0
    assert (await cli(kubeconfig, "status", "default/chat"))[0] == 0


@pytest.mark.parametrize(
    ("args", "annotation", "printed"),
    [
        (["promote"], "promote", "team/chat: promote done, phase Progressing, step 4/4, canary 50%"),
        (["promote", "--full"], "promote-full", "team/chat: promote-full done, phase Stable"),
        (["abort"], "abort", "team/chat: abort done, phase RolledBack, aborted by hand ("),
        (["undo", "--to-revision", "r1"], "undo", "team/chat: undo done, phase Stable"),
    ],
)
async def test_an_action_sets_exactly_its_annotation_and_waits_for_the_echo(
    kmock: RoutewayEmulator, kubeconfig: Path, args: list[str], annotation: str, printed: str
) -> None:
    await seed_route(kmock)
    spec_before = get(kmock, RESOURCE, "chat", "team")["spec"]
    before = len(kmock.writes())
    async with operator_stand_in(kmock):
        code, out, err = await cli(kubeconfig, args[0], "chat", *args[1:])
    assert (code, err) == (0, "")
    assert out.startswith(printed)
    [patch] = cli_writes(kmock, before)
    assert patch.method == "PATCH" and patch.url.path == f"{API}/team/modelroutes/chat"
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert list(patch.data) == ["metadata"] and list(patch.data["metadata"]) == ["annotations"]
    [(key, value)] = patch.data["metadata"]["annotations"].items()
    assert key == f"routeway.dev/{annotation}"
    if annotation == "undo":  # the revision, then a fresh token: a second undo is a new value
        revision, _, token = value.partition("@")
        assert revision == "r1" and TOKEN.match(token), value
    else:
        assert TOKEN.match(value)
    obj = get(kmock, RESOURCE, "chat", "team")
    assert obj["spec"] == spec_before
    handled = obj["status"]["rollout"]["handledActions"]
    assert (handled[0]["action"], handled[0]["token"]) == (annotation, value)


async def test_retry_after_abort_uses_a_fresh_token(kmock: RoutewayEmulator, kubeconfig: Path) -> None:
    await seed_route(kmock)
    async with operator_stand_in(kmock):
        assert (await cli(kubeconfig, "abort", "chat"))[0] == 0
        code, out, _ = await cli(kubeconfig, "retry", "chat")
        assert code == 0 and out.startswith("team/chat: retry done, phase Paused, step 2/4, canary 10%")
        code, out, _ = await cli(kubeconfig, "abort", "chat")  # a second abort: a new token, handled again
        assert code == 0 and "phase RolledBack" in out
    aborts = [
        h
        for h in get(kmock, RESOURCE, "chat", "team")["status"]["rollout"]["handledActions"]
        if h["action"] == "abort"
    ]
    assert len(aborts) == 2 and aborts[0]["token"] != aborts[1]["token"]


async def test_a_refused_action_exits_1_with_the_operators_reason(
    kmock: RoutewayEmulator, kubeconfig: Path
) -> None:
    await seed_route(kmock)
    async with operator_stand_in(kmock):
        assert (await cli(kubeconfig, "promote", "chat", "--full"))[0] == 0  # now Stable
        code, out, err = await cli(kubeconfig, "abort", "chat")
    assert (code, out) == (1, "")
    assert err == "error: abort of team/chat refused: no rollout in progress\n"


async def test_without_an_operator(kmock: RoutewayEmulator, kubeconfig: Path) -> None:
    await seed_route(kmock)
    code, out, err = await cli(kubeconfig, "promote", "chat", "--timeout", "0.5")
    assert (code, out) == (1, "")
    assert err.startswith("routeway.dev/promote=") and "did not handle it within 0.5s" in err
    code, out, err = await cli(kubeconfig, "abort", "chat", "--no-wait")
    assert (code, out) == (0, "")
    assert re.fullmatch(r"routeway\.dev/abort=\d{8}T\d{6}Z-[0-9a-f]{6} set on modelroute team/chat\n", err)
    annotations = get(kmock, RESOURCE, "chat", "team")["metadata"]["annotations"]
    assert {"routeway.dev/promote", "routeway.dev/abort"} <= set(annotations)


async def test_missing_route_missing_status_unreachable(
    kmock: RoutewayEmulator, kubeconfig: Path, unreachable: Path
) -> None:
    await seed_route(kmock, rollout=False)
    code, _, err = await cli(kubeconfig, "status", "nope")
    assert (code, err) == (1, "error: modelroute team/nope not found\n")
    code, _, err = await cli(kubeconfig, "promote", "nope")
    assert (code, err) == (1, "error: modelroute team/nope not found\n")
    code, _, err = await cli(kubeconfig, "status", "chat")
    assert code == 1 and err.startswith("error: modelroute team/chat has no status.rollout yet")
    code, _, err = await cli(unreachable, "status", "chat")
    assert code == 1 and err.startswith("error: cannot reach the Kubernetes API at http://127.0.0.1:9")
