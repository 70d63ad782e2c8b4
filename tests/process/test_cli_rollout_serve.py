"""`routeway rollout … --admin URL` against a real `routeway serve`: the command line and the
server it talks to, both real processes (tests/cli covers the client against a stand-in)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from process_rig import Launch
from rollout_rig import backend_yaml, rollout, route_yaml, save, wait_phase

STEPS = "[{setWeight: 20}, {pause: {}}, {setWeight: 60}, {pause: {}}]"


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "routeway.cli",
        "rollout",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_promote_abort_retry_and_undo_through_the_admin_port(
    tmp_path: Path, launch: Launch
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "backends.yaml").write_text(
        backend_yaml("v1", "model-v1") + "---\n" + backend_yaml("v2", "model-v2")
    )
    route = folder / "route.yaml"
    route.write_text(route_yaml("v1", STEPS))
    routeway = await launch("serve", "-f", str(folder))
    admin = ("--admin", routeway.admin)
    await rollout(routeway)  # the first load is in

    code, out, _ = await cli("status", "chat", *admin, "-o", "json")
    assert code == 0
    stable = json.loads(out)
    assert stable["route"] == "default/chat" and stable["phase"] == "Stable"

    save(route, route_yaml("v2", STEPS))
    paused = await wait_phase(routeway, "Paused")
    code, out, _ = await cli("status", "default/chat", *admin)
    assert code == 0 and "Paused" in out and paused["canaryRevision"] in out, out

    code, out, err = await cli("promote", "chat", *admin)
    assert code == 0, err
    assert (await wait_phase(routeway, "Paused"))["canaryWeight"] == 60

    code, _, err = await cli("abort", "chat", *admin)
    assert code == 0, err
    back = await wait_phase(routeway, "RolledBack")
    assert back["stableRevision"] == stable["stableRevision"]

    code, _, err = await cli("promote", "chat", *admin)  # nothing in progress: refused by the machine
    assert code == 1 and "no rollout in progress" in err, err

    code, _, err = await cli("retry", "chat", *admin)
    assert code == 0, err
    assert (await wait_phase(routeway, "Paused"))["canaryRevision"] == paused["canaryRevision"]

    code, _, err = await cli("promote", "chat", "--full", *admin)
    assert code == 0, err
    promoted = await wait_phase(routeway, "Stable")
    assert promoted["stableRevision"] == paused["canaryRevision"]

    code, _, err = await cli("undo", "chat", "--to-revision", stable["stableRevision"], *admin)
    assert code == 0, err
    assert (await wait_phase(routeway, "Paused"))["canaryRevision"] == stable["stableRevision"]

    code, _, err = await cli("status", "nowhere", *admin)
    assert code == 1 and "nowhere" in err, err
    assert await routeway.stop() == 0
