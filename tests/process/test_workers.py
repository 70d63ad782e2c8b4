"""`--workers 2`: two processes share the client port; the admin port speaks for the group.

Covers: connections spread over both workers (SO_REUSEPORT; checked by which process holds
each accepted socket) and their requests are all counted by the supervisor's `/metrics` and
`/routes` (prometheus-client multiprocess mode); a manifest edit reaches every worker;
a worker killed with SIGKILL is replaced and the group becomes ready again, and so is one whose
event loop stopped answering (heartbeats); SIGTERM exits 0;
workers leave when their supervisor is killed; five reloads under steady traffic fail no
request; a second instance on the same port fails instead of sharing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
from process_rig import Launch, Routeway, Upstream, eventually, manifest, routeway_command
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = 24


async def ready(routeway: Routeway) -> bool:
    return (await routeway.get_admin("/readyz"))[0] == 200


async def requests_counted(routeway: Routeway) -> float:
    _, text = await routeway.get_admin("/metrics")
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "routeway_requests":
            total += sum(s.value for s in family.samples if s.name == "routeway_requests_total")
    return total


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections on local `port` whose socket is open in process `pid`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
                held += local_port == port and state == "01" and inode in inodes
    return held


async def kill_a_worker_and_wait_for_its_replacement(routeway: Routeway) -> None:
    victim = worker_pids(routeway.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        pids = worker_pids(routeway.proc.pid)
        return len(pids) == 2 and victim not in pids and await ready(routeway)

    await eventually(replaced, what=f"a new worker\n{routeway.log()}", within=30)


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's spawned workers (not multiprocessing's resource tracker)."""
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as fh:
        children = [int(pid) for pid in fh.read().split()]
    workers = []
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"spawn_main" in fh.read():
                    workers.append(pid)
        except FileNotFoundError:
            continue
    return workers


async def test_two_workers_serve_as_one(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-a"))
    routeway = await launch("serve", "-f", str(path), workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening", within=30)

    # One kept-alive connection per client: the kernel spreads them over both listeners.
    clients = [aiohttp.ClientSession() for _ in range(REQUESTS)]
    try:
        responses = []
        for client in clients:
            async with client.post(
                f"{routeway.url}/v1/chat/completions", json={"model": "chat", "messages": []}
            ) as response:
                await response.read()
                responses.append(response)
        assert [r.status for r in responses] == [200] * REQUESTS
        per_worker = [connections_held(pid, routeway.port) for pid in worker_pids(routeway.proc.pid)]
        assert sum(per_worker) == REQUESTS and min(per_worker) > 0, per_worker
    finally:
        await asyncio.gather(*(client.close() for client in clients))

    # each worker applies its request ledger within ledger.FLUSH_DELAY: counted soon, and once
    async def all_counted() -> float:
        counted = await requests_counted(routeway)
        return counted if counted >= REQUESTS else 0.0

    assert await eventually(all_counted, what="every request counted", within=5) == REQUESTS
    _, routes = await routeway.get_admin("/routes")
    assert sum(t["stats"]["requests"] for t in routes["routes"][0]["targets"]) == REQUESTS

    # A reload reaches every worker: soon every request sees the new revision.
    old = responses[0].headers["x-routeway-revision"]
    path.write_text(manifest(upstream.url, model="model-b"))

    async def all_reloaded() -> bool:
        batch = await asyncio.gather(*(routeway.chat() for _ in range(10)))
        return all(r.headers.get("x-routeway-revision", old) != old for r in batch)

    await eventually(all_reloaded, what="every worker on the new revision")
    assert upstream.seen[-1]["model"] == "model-b"

    # A crashed worker is replaced.
    await kill_a_worker_and_wait_for_its_replacement(routeway)
    assert "exited with code -9" in routeway.log()
    assert (await routeway.chat()).status == 200

    assert await routeway.stop() == 0


async def test_a_replacement_worker_gets_the_groups_config_not_the_files(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    """Workers do not read the manifests: the supervisor translates once and relays. So a worker
    started after the files went bad still serves the last good config, like the others."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-a"))
    routeway = await launch("serve", "-f", str(path), workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening", within=30)
    good = (await routeway.chat()).headers["x-routeway-revision"]
    path.write_text("kind: ModelRoute\nspec: [not, a, mapping]\n")

    async def reported() -> bool:  # its objects keep their last good versions (issue 14 item 3)
        _, routes = await routeway.get_admin("/routes")
        return any("document 1" in p for p in routes.get("problems") or ())

    await eventually(reported, what="the broken edit reported")
    await kill_a_worker_and_wait_for_its_replacement(routeway)
    # fresh connections land on both workers; every one answers from the last good config
    answers = await asyncio.gather(*(routeway.chat() for _ in range(REQUESTS)))
    assert {(a.status, a.headers.get("x-routeway-revision")) for a in answers} == {(200, good)}
    assert "serving the last good version" in routeway.log()
    assert await routeway.stop() == 0


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (the test container's init may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_reloads_under_load_fail_no_request(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    """Requests keep flowing through both workers while the manifests change five times."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-0"))
    routeway = await launch("serve", "-f", str(path), workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening", within=30)
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            statuses.append((await routeway.chat()).status)

    clients = [asyncio.create_task(client()) for _ in range(4)]
    for generation in range(1, 6):
        path.write_text(manifest(upstream.url, model=f"model-{generation}"))

        async def live(generation: int = generation) -> bool:
            return bool(upstream.seen) and upstream.seen[-1]["model"] == f"model-{generation}"

        await eventually(live, what=f"generation {generation} live")
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > 20
    assert set(statuses) == {200}
    # each reload is counted once for the group, not once per worker (2 workers would give 12)
    _, metrics = await routeway.get_admin("/metrics")
    applied = [
        float(line.rsplit(" ", 1)[1])
        for line in str(metrics).splitlines()
        if line.startswith('routeway_config_reloads_total{result="applied"}')
    ]
    assert applied and 1 <= applied[0] <= 6, applied
    assert await routeway.stop() == 0


async def test_the_group_owns_its_port_and_dies_with_its_supervisor(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    """SO_REUSEPORT is for a group's own workers: another `routeway` (one process or a group)
    on the same port fails instead of silently taking a share of the connections. And a
    SIGKILLed (OOM) supervisor leaves no orphaned workers holding the port."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    first = await launch("serve", "-f", str(path), workers=2)
    await eventually(lambda: ready(first), what="first group's workers listening", within=30)
    for workers in (1, 2):
        second = await asyncio.create_subprocess_exec(
            *routeway_command(),
            *("serve", "-f", str(path), "--port", str(first.port), "--admin-port", "0"),
            *("--workers", str(workers)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(second.communicate(), 60)
        except TimeoutError:
            second.kill()
            raise AssertionError((await second.communicate())[0].decode()) from None
        assert second.returncode == 1
        assert f"cannot listen for clients on 127.0.0.1:{first.port}" in out.decode()

    workers_pids = worker_pids(first.proc.pid)
    assert len(workers_pids) == 2
    first.proc.kill()
    await first.proc.wait()

    async def all_gone() -> bool:
        return not any(_alive(pid) for pid in workers_pids)

    await eventually(all_gone, what="workers exited", within=30)


async def test_a_worker_whose_loop_is_stuck_is_replaced(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    """A worker that is alive but answers nothing (SIGSTOP stands in for a blocked event loop)
    holds its share of the port's connections; the supervisor must notice the silence."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-a"))
    routeway = await launch("serve", "-f", str(path), "--worker-timeout", "3", workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening", within=30)
    stuck, healthy = worker_pids(routeway.proc.pid)
    os.kill(stuck, signal.SIGSTOP)

    async def replaced() -> bool:
        pids = worker_pids(routeway.proc.pid)
        return len(pids) == 2 and stuck not in pids and await ready(routeway)

    await eventually(replaced, what=f"the stuck worker replaced\n{routeway.log()}", within=30)
    assert f"(pid {stuck}) has not answered" in routeway.log()
    assert healthy in worker_pids(routeway.proc.pid)  # a worker that beats is left alone
    answers = await asyncio.gather(*(routeway.chat() for _ in range(REQUESTS)))  # fresh connections
    assert [a.status for a in answers] == [200] * REQUESTS
    assert await routeway.stop() == 0


async def test_a_paused_group_kills_no_worker_when_it_resumes(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    """SIGSTOP of the whole group (what a frozen cgroup or `docker pause` does) for longer than
    --worker-timeout: the clock ran on while nobody could beat, which is not a hang."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-a"))
    routeway = await launch("serve", "-f", str(path), "--worker-timeout", "2", workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening", within=30)
    workers = worker_pids(routeway.proc.pid)
    group = [routeway.proc.pid, *workers]
    for pid in group:
        os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(5)
    os.kill(routeway.proc.pid, signal.SIGCONT)  # a thaw is not atomic: the supervisor runs first
    await asyncio.sleep(0.5)
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    await asyncio.sleep(3)  # longer than the timeout: a wrong verdict would have been reached
    assert "has not answered" not in routeway.log()
    assert sorted(worker_pids(routeway.proc.pid)) == sorted(workers)
    answers = await asyncio.gather(*(routeway.chat() for _ in range(REQUESTS)))
    assert [a.status for a in answers] == [200] * REQUESTS
    assert await routeway.stop() == 0
