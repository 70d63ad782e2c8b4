"""Rollouts under `routeway serve`, end to end: real processes, the openai client, real traffic.

Matrix: a bad canary (mock errorRate 0.3) is rolled back within failureLimit + 2 intervals and
no request reaches it afterwards (x-routeway-arm, the model that answered, and the per-arm
observations), with two workers (the supervisor reads the group's observations); a good one is
promoted; a `pause: {}` step waits for POST promote; GET /rollouts lists every route in the
pinned shape; POST errors (404, 400, 409) in the OpenAI error shape; undo; a Git revert
returns to Stable at once; a ModelBackend edit is a rollout with both arms of one backend
name (the stable arm keeps the old spec); without a strategy a change applies at once and is
recorded; a `routeway proxy` pod's admin port has no /rollouts.

Short intervals (1s) keep it fast; every wait polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from process_rig import Launch, eventually
from rollout_rig import (
    ERROR_RATE_ANALYSIS,
    arm_counts,
    ask,
    backend_yaml,
    client_for,
    post,
    rollout,
    route_yaml,
    save,
    served_canary,
    traffic,
    wait_applied_without_canary,
    wait_phase,
)

from routeway.local import load_local
from routeway.rollout.document import parse_time

BACKENDS = backend_yaml("v1", "model-v1") + "---\n" + backend_yaml("v2-bad", "model-bad", error_rate=0.3)
BACKENDS += "---\n" + backend_yaml("v2", "model-v2")


def layout(tmp_path: Path, route: str) -> tuple[Path, Path]:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "backends.yaml").write_text(BACKENDS)
    path = folder / "route.yaml"
    path.write_text(route)
    return folder, path


async def test_bad_canary_is_rolled_back_and_gets_no_more_traffic(tmp_path: Path, launch: Launch) -> None:
    steps = "[{setWeight: 50}, {pause: {duration: 1h}}]"
    folder, route = layout(tmp_path, route_yaml("v1", steps, analysis=ERROR_RATE_ANALYSIS))
    routeway = await launch("serve", "-f", str(folder), workers=2)
    stable = (await rollout(routeway))["stableRevision"]

    async with traffic(routeway) as seen:
        save(route, route_yaml("v2-bad", steps, analysis=ERROR_RATE_ANALYSIS))
        progressing = await wait_phase(routeway, "Progressing")
        canary = progressing["canaryRevision"]
        started = parse_time(progressing["startedAt"])
        rolled_back = await wait_phase(routeway, "RolledBack")

    # failureLimit 1 → the second failed check rolls back: checks are one interval apart from
    # the start, so in rollout time that is within failureLimit + 2 intervals. Counted in
    # checks, not in wall-clock seconds (a loaded machine's timer may fire late).
    entry = rolled_back["history"][0]
    assert entry["revision"] == canary and entry["outcome"] == "rolledBack"
    assert "errorRate" in entry["reason"] and "check 2 failed" in entry["reason"]
    assert rolled_back["message"] == entry["reason"]
    assert started is not None and parse_time(entry["at"]) >= started + 2.0  # type: ignore[operator]
    assert rolled_back["stableRevision"] == stable
    assert [w["arm"] for w in rolled_back["weights"] if w["weight"] > 0] == ["stable"]
    assert any(a.arm == "canary" and a.model == "model-bad" for a in seen.answers)  # it did get traffic
    assert "RolledBack" in routeway.log()

    # Afterwards no request reaches the canary: not by the header, the model, nor the proxy's count.
    await wait_applied_without_canary(routeway)
    before = await arm_counts(routeway, canary)
    client = client_for(routeway)
    answers = await asyncio.gather(*(ask(client) for _ in range(60)))
    await client.close()
    assert all(a.status == 200 and a.model == "model-v1" and a.arm != "canary" for a in answers), answers
    assert await arm_counts(routeway, stable) > 0
    assert await arm_counts(routeway, canary) == before
    assert (await rollout(routeway))["phase"] == "RolledBack"  # stays so until the spec changes
    assert await routeway.stop() == 0


async def test_good_canary_is_promoted(tmp_path: Path, launch: Launch) -> None:
    steps = "[{setWeight: 30}, {pause: {duration: 2s}}, {setWeight: 60}, {pause: {duration: 2s}}]"
    folder, route = layout(tmp_path, route_yaml("v1", steps, analysis=ERROR_RATE_ANALYSIS))
    routeway = await launch("serve", "-f", str(folder))

    async with traffic(routeway) as seen:
        save(route, route_yaml("v2", steps, analysis=ERROR_RATE_ANALYSIS))
        canary = (await wait_phase(routeway, "Progressing"))["canaryRevision"]
        promoted = await wait_phase(routeway, "Stable")
    assert promoted["stableRevision"] == canary
    assert promoted["history"][0]["outcome"] == "promoted"
    assert promoted["lastCheck"]["verdict"] == "pass"
    assert {(a.arm, a.model) for a in seen.answers if a.arm} >= {
        ("stable", "model-v1"),
        ("canary", "model-v2"),
    }

    await wait_applied_without_canary(routeway)
    client = client_for(routeway)
    answers = await asyncio.gather(*(ask(client) for _ in range(20)))
    await client.close()
    assert {a.model for a in answers} == {"model-v2"}
    assert await routeway.stop() == 0


async def test_pause_step_waits_for_promote_and_admin_errors(tmp_path: Path, launch: Launch) -> None:
    steps = "[{setWeight: 30}, {pause: {}}, {setWeight: 60}]"
    folder, route = layout(tmp_path, route_yaml("v1", steps))
    (folder / "other.yaml").write_text(route_yaml("v1", steps, name="other"))
    routeway = await launch("serve", "-f", str(folder))

    # Every route is listed, Stable ones too, in the pinned shape.
    status, listed = await routeway.get_admin("/rollouts")
    assert status == 200
    assert [r["route"] for r in listed["rollouts"]] == ["default/chat", "default/other"]
    first = listed["rollouts"][0]
    for key in ("phase", "stableRevision", "canaryRevision", "step", "weights", "analysis", "history"):
        assert key in first
    assert first["phase"] == "Stable" and first["canaryRevision"] is None
    assert first["weights"] == [{"backend": "default/v1", "arm": "stable", "weight": 100.0}]
    assert set(first["history"][0]) >= {"revision", "outcome", "reason", "at"}
    assert [s["kind"] for s in first["policy"]["steps"]] == ["setWeight", "pause", "setWeight"]

    # Errors, in the OpenAI shape.
    status, body = await post(routeway, "/rollouts/default/chat/promote")
    assert status == 409 and body["error"]["code"] == "action_refused", body
    assert "no rollout in progress" in body["error"]["message"]
    status, body = await post(routeway, "/rollouts/default/nowhere/promote")
    assert status == 404 and body["error"]["code"] == "route_not_found", body
    status, body = await post(routeway, "/rollouts/default/chat/jump")
    assert status == 400 and body["error"]["code"] == "invalid_action", body
    status, body = await post(routeway, "/rollouts/default/chat/undo", {"rev": "x"})
    assert status == 400 and body["error"]["code"] == "invalid_body", body
    status, body = await post(routeway, "/rollouts/default/chat/undo", {"revision": "0000"})
    assert status == 409 and "not in the route's history" in body["error"]["message"], body

    stable = first["stableRevision"]
    save(route, route_yaml("v2", steps))
    paused = await wait_phase(routeway, "Paused")
    assert paused["pausedBy"] == "step" and paused["step"] == 1
    assert {(w["arm"], w["weight"]) for w in paused["weights"]} == {("stable", 70.0), ("canary", 30.0)}
    canary = await served_canary(routeway)
    assert canary is not None and canary["weight"] == 30.0
    await asyncio.sleep(2.0)  # two more seconds: nothing moves it but a promote
    assert (await rollout(routeway))["phase"] == "Paused"

    status, body = await post(routeway, "/rollouts/default/chat/promote")
    assert status == 200, body
    assert body["route"] == "default/chat" and body["phase"] == "Stable"  # setWeight 60, then done
    assert body["stableRevision"] == paused["canaryRevision"]
    await wait_applied_without_canary(routeway)

    # undo: back to the earlier revision, served as a rollout of it (paused at the same step).
    status, body = await post(routeway, "/rollouts/default/chat/undo", {"revision": stable})
    assert status == 200 and body["canaryRevision"] == stable, body
    assert "undo" in routeway.log()
    assert (await rollout(routeway, "default/other"))["phase"] == "Stable"
    assert await routeway.stop() == 0


async def test_git_revert_returns_to_stable_at_once(tmp_path: Path, launch: Launch) -> None:
    steps = "[{setWeight: 40}, {pause: {}}]"
    original = route_yaml("v1", steps)
    folder, route = layout(tmp_path, original)
    routeway = await launch("serve", "-f", str(folder))
    stable = (await rollout(routeway))["stableRevision"]

    save(route, route_yaml("v2", steps))
    canary = (await wait_phase(routeway, "Paused"))["canaryRevision"]
    assert await served_canary(routeway) is not None

    save(route, original)  # the file back to the stable content: no steps, no analysis
    back = await wait_phase(routeway, "Stable")
    assert back["stableRevision"] == stable
    assert back["history"][0]["revision"] == canary and back["history"][0]["outcome"] == "superseded"
    await wait_applied_without_canary(routeway)
    assert "Reverted" in routeway.log()
    assert await routeway.stop() == 0


async def test_backend_edit_is_a_rollout_with_both_arms(tmp_path: Path, launch: Launch) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    backend = folder / "backend.yaml"
    backend.write_text(backend_yaml("llama", "llama-old"))
    (folder / "route.yaml").write_text(route_yaml("llama", "[{setWeight: 50}, {pause: {}}]"))
    routeway = await launch("serve", "-f", str(folder))

    save(backend, backend_yaml("llama", "llama-new"))
    paused = await wait_phase(routeway, "Paused")
    assert {(w["backend"], w["arm"], w["weight"]) for w in paused["weights"]} == {
        ("default/llama", "stable", 50.0),
        ("default/llama", "canary", 50.0),
    }

    async def both_arms() -> bool:
        client = client_for(routeway)
        answers = await asyncio.gather(*(ask(client) for _ in range(40)))
        await client.close()
        return {(a.arm, a.model) for a in answers} == {("stable", "llama-old"), ("canary", "llama-new")}

    await eventually(both_arms, within=30.0, what="the stable arm on the old spec, the canary on the new")
    assert await routeway.stop() == 0


async def test_without_strategy_a_change_applies_at_once(tmp_path: Path, launch: Launch) -> None:
    plain = route_yaml("v1", "[]").split("  strategy:")[0]
    folder, route = layout(tmp_path, plain)
    routeway = await launch("serve", "-f", str(folder))
    save(route, plain.replace("name: v1", "name: v2"))

    async def recorded() -> dict[str, object] | None:
        current = await rollout(routeway)
        return current if len(current["history"]) == 2 else None

    current = await eventually(recorded, what="the new revision in history")
    assert current["phase"] == "Stable" and current["history"][0]["outcome"] == "promoted"
    client = client_for(routeway)
    answer = await ask(client)
    await client.close()
    assert answer.model == "model-v2" and answer.arm is None
    assert await routeway.stop() == 0


async def test_proxy_pod_admin_has_no_rollout_actions(tmp_path: Path, launch: Launch) -> None:
    folder, _ = layout(tmp_path, route_yaml("v1", "[{setWeight: 50}]"))
    rendered = load_local([str(folder)])
    assert rendered.config is not None
    config = tmp_path / "config.json"
    config.write_bytes(rendered.config.to_json())
    routeway = await launch("proxy", "--config", str(config), "--host", "127.0.0.1")
    status, _ = await post(routeway, "/rollouts/default/chat/promote")
    assert status in (404, 405)
    assert (await routeway.get_admin("/rollouts"))[0] == 404
    assert (await routeway.get_admin("/observations"))[0] == 200  # read-only observations stay
    assert await routeway.stop() == 0


async def test_a_web_page_cannot_act_on_a_rollout(tmp_path: Path, launch: Launch) -> None:
    """The admin port is on 127.0.0.1, which every web page the developer opens can reach: a
    cross-site form post (text/plain, an Origin header, no preflight) or a DNS-rebound page
    must not abort, promote or undo a rollout. The CLI and curl send no Origin."""
    steps = "[{setWeight: 30}, {pause: {}}]"
    folder, route = layout(tmp_path, route_yaml("v1", steps))
    routeway = await launch("serve", "-f", str(folder))
    save(route, route_yaml("v2", steps))
    await wait_phase(routeway, "Paused")

    for origin in ("https://evil.example", "null"):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{routeway.admin}/rollouts/default/chat/abort",
                data=b"x=1",
                headers={"Origin": origin, "Content-Type": "text/plain"},
            ) as response,
        ):
            assert response.status == 403, await response.text()
    assert (await rollout(routeway))["phase"] == "Paused"
    status, body = await post(routeway, "/rollouts/default/chat/abort")  # no Origin: the CLI, curl
    assert status == 200 and body["phase"] == "RolledBack", body
    assert await routeway.stop() == 0
