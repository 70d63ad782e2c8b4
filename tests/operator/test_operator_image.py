"""The operator and the proxy run from the built image against the API, as in a cluster.

`scripts/test-image` builds the image and runs this module (with tests/process/test_image.py)
with ROUTEWAY_IMAGE set; without it the module is skipped, as the suite's default run builds no
image. The API server is kmock (RoutewayEmulator, tests/operator/kmock_ext.py) on 127.0.0.1:
buildah's chroot isolation shares the host's network, so a kubeconfig naming that URL, mounted
read-only at /cfg, is all either process needs (KUBECONFIG, as `routeway operator` outside a
cluster and kubernetes_asyncio read it).

Covers, with both processes started by `buildah run` as the chart's user 10001:10001:
- `routeway operator -n default` (the real kopf operator, imported from the image's venv) turns
  a ModelGateway, two ModelBackends (a mock and a real upstream on loopback whose key lives in
  a Secret) and a ModelRoute into the gateway's ConfigMap and credentials Secret in kmock;
- `routeway proxy --configmap … --secret … --namespace default`, as the operator's pods run it,
  reads both through the API and answers the official OpenAI client; a change of the route in
  the API reaches it without a restart (new `x-routeway-revision`, the upstream now serving
  with the key from the Secret);
- on SIGTERM (sent to the container's command, as kubelet does) the proxy drains and both exit
  0; neither changed a file of the image (the chart mounts the root read-only), and no
  credential value reached a log;
- against an API that cannot be reached, or without any credentials, the operator exits 1 at
  once saying so; with `--peering rw` and no such KopfPeering it exits 1 naming the object.

The buildah helpers are tests/shared/image_rig.py's, shared with tests/process/test_image.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web
from image_rig import SKIP_WITHOUT_IMAGE, buildah, files_of, new_container, run_args
from kmock_ext import RoutewayEmulator
from operator_factories import backend, gateway, get, patch, route, secret, seed
from routeway_operator.builders import ChildNames

from routeway.configstore import REVISION_ANNOTATION

KEY = "sk-from-the-secret"  # the upstream's key: in a Secret, never in a log
START = 90.0  # seconds: a cold interpreter in a chroot on a busy 2-core machine; a bound, not a timing
LISTENING = re.compile(rb"listening on http://[^:]+:(\d+).*\(admin on http://[^:]+:(\d+)\)")
pytestmark = SKIP_WITHOUT_IMAGE


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """One working container for the module (vfs copies the whole image for each one)."""
    name = new_container()
    yield name
    buildah("rm", name, check=False)


def with_kubeconfig(cfg: Path | None) -> dict[str, tuple[str, ...]]:
    """`run_args` options that mount `cfg` at /cfg and point KUBECONFIG into it."""
    if cfg is None:
        return {}
    return {"volumes": (f"{cfg}:/cfg:ro",), "env": ("KUBECONFIG=/cfg/kubeconfig",)}


# --- processes from the image ---------------------------------------------------------------


@dataclass
class Running:
    """A `buildah run` in its own process group, its output in a file."""

    proc: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> None:
        if self.proc.returncode is not None:
            pytest.fail(f"exited with {self.proc.returncode}:\n{self.log()}")

    async def stop(self) -> int:
        """SIGTERM to the container's command, as kubelet sends it to a pod's process; its code.

        `buildah run` does not relay signals, and signalling its whole group is no clean stop:
        buildah's chroot helper dies of the SIGTERM and its child, the command, is then killed
        (SIGKILL, "subprocess exited on killed")."""
        command = self._command()
        if self.proc.returncode is None and command is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        await self.kill()
        return self.proc.returncode if self.proc.returncode is not None else -1

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    def _command(self) -> int | None:
        """The first process below `buildah run` that is not buildah's own (its chroot helpers
        are `buildah-chroot-runtime` and `buildah-chroot-exec`)."""
        pid = self.proc.pid
        try:
            while b"buildah" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                # buildah is a Go program: any of its threads may have started the child
                tasks = Path(f"/proc/{pid}/task").glob("*/children")
                pid = int(" ".join(task.read_text() for task in tasks).split()[0])
        except (OSError, IndexError):
            return None
        return pid


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Running] = []

    async def run(container: str, *command: str, cfg: Path | None = None) -> Running:
        log_path = tmp_path / f"{command[1]}-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *run_args(container, *command, **with_kubeconfig(cfg)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Running(proc, log_path))
        return started[-1]

    yield run
    for running in started:
        await running.kill()


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, *, alive: tuple[Running, ...] = ()) -> Any:
    """Poll `check` until truthy; fail with the logs when a process died or after START seconds."""
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        for running in alive:
            running.alive()
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    logs = "\n".join(running.log() for running in alive)
    pytest.fail(f"not within {START:.0f} s: {what}\n{logs}")


def kubeconfig(folder: Path, server: str) -> Path:
    """A kubeconfig naming `server`, readable by the image's user (as a mounted Secret would be)."""
    folder.mkdir()
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "api", "cluster": {"server": server}}],
                "users": [{"name": "dev", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "api", "context": {"cluster": "api", "user": "dev"}}],
                "current-context": "api",
            }
        )
    )
    folder.chmod(0o755)
    path.chmod(0o644)
    return folder


# --- a real upstream that wants the key ------------------------------------------------------


@dataclass
class Upstream:
    url: str = ""
    seen: list[str | None] = field(default_factory=list)  # the Authorization headers it got


UPSTREAM = web.AppKey("upstream", Upstream)


async def _chat(request: web.Request) -> web.Response:
    state = request.app[UPSTREAM]
    state.seen.append(request.headers.get("Authorization"))
    if request.headers.get("Authorization") != f"Bearer {KEY}":
        return web.json_response(
            {"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401
        )
    body = await request.json()
    return web.json_response(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "from upstream"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    app = web.Application()
    app[UPSTREAM] = state
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{site.port}/v1"
    yield state
    await runner.cleanup()


# --- the tests --------------------------------------------------------------------------------


async def test_operator_and_proxy_from_the_image_follow_the_api(
    kmock: RoutewayEmulator,
    container: str,
    start: Callable[..., Awaitable[Running]],
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    cfg = kubeconfig(tmp_path / "cfg", str(kmock.url).rstrip("/"))
    seed(
        kmock,
        gateway("gw", replicas=1),
        backend("m"),
        backend("up", url=upstream.url, model="upstream-model", apiKeySecretRef={"name": "up", "key": "k"}),
        secret("up", k=KEY),
        route("chat", "chat", {"m": 1}),
    )
    names = ChildNames.of("gw")
    before = files_of(container, skip=("cfg",))

    operator = await start(container, "routeway", "operator", "-n", "default", "--no-liveness", cfg=cfg)

    async def children() -> bool:
        written = get(kmock, "v1/configmaps", names.configmap), get(kmock, "v1/secrets", names.secret)
        return all(written)

    await wait_for(children, "the gateway's ConfigMap and credentials Secret", alive=(operator,))
    assert any(r.headers.get("Authorization") == "Bearer t0ken" for r in kmock.writes())

    proxy = await start(
        container, "routeway", "proxy", "--configmap", names.configmap, "--secret", names.secret,
        "--namespace", "default", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
        "--workers", "1", cfg=cfg,
    )  # fmt: skip
    port = await _until_ready(proxy, operator)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

    async def ask() -> tuple[str, str, str]:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hello"}]
        )
        answer = raw.parse().choices[0].message.content or ""
        return raw.headers["x-routeway-revision"], raw.headers["x-routeway-backend"], answer

    first_revision, first_backend, first_answer = await ask()
    assert first_answer
    assert first_backend == "default/m"
    assert upstream.seen == []

    # The route moves to the upstream in the API: the operator writes a new revision, the proxy
    # (still the same process) watches it arrive and serves it with the Secret's key.
    await patch(kmock, "ModelRoute", "chat", {"spec": {"backends": [{"name": "up", "weight": 1}]}})

    async def moved() -> tuple[str, str, str] | None:
        written = get(kmock, "v1/configmaps", names.configmap)["metadata"]["annotations"]
        found = await ask()  # served: the revision the operator wrote last, and not the first
        return found if found[0] == written[REVISION_ANNOTATION] != first_revision else None

    _, served_by, answer = await wait_for(moved, "the new revision at the proxy", alive=(operator, proxy))
    assert served_by == "default/up"
    assert answer == "from upstream"
    assert upstream.seen[-1] == f"Bearer {KEY}"
    assert len(LISTENING.findall(proxy.log_path.read_bytes())) == 1  # served without a restart

    await client.close()
    assert await proxy.stop() == 0, proxy.log()  # drained and exited, as on a pod's SIGTERM
    assert await operator.stop() == 0, operator.log()
    after = files_of(container, skip=("cfg",))
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert changed == []
    for running in (operator, proxy):
        assert KEY not in running.log()


async def _until_ready(proxy: Running, operator: Running) -> int:
    """The client port, once the admin port's /readyz says ready (ports read from the log)."""
    async with aiohttp.ClientSession() as session:

        async def ready() -> int | None:
            listening = LISTENING.search(proxy.log_path.read_bytes())
            if not listening:
                return None
            try:
                async with session.get(f"http://127.0.0.1:{int(listening[2])}/readyz") as response:
                    return int(listening[1]) if response.status == 200 else None
            except aiohttp.ClientError:
                return None

        port: int = await wait_for(ready, "the proxy's /readyz", alive=(proxy, operator))
        return port


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nothing else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("api", ["closed port", "no kubeconfig"])
async def test_operator_from_the_image_without_an_api_exits_1(
    container: str, start: Callable[..., Awaitable[Running]], closed_port: int, tmp_path: Path, api: str
) -> None:
    cfg = kubeconfig(tmp_path / "cfg", f"http://127.0.0.1:{closed_port}") if api == "closed port" else None
    operator = await start(container, "routeway", "operator", "-n", "default", "--no-liveness", cfg=cfg)
    try:
        code = await asyncio.wait_for(operator.proc.wait(), START)
    except TimeoutError:
        pytest.fail(f"the operator still runs after {START:.0f} s without an API:\n{operator.log()}")
    assert code == 1, operator.log()  # buildah's code is the command's
    assert "the Kubernetes API cannot be reached" in operator.log()
    assert "Traceback" not in operator.log()  # a message, not a crash
    if api == "no kubeconfig":
        assert "no credentials" in operator.log()


async def test_operator_from_the_image_with_a_missing_peering_exits_1(
    kmock: RoutewayEmulator, container: str, start: Callable[..., Awaitable[Running]], tmp_path: Path
) -> None:
    cfg = kubeconfig(tmp_path / "cfg", str(kmock.url).rstrip("/"))
    operator = await start(
        container, "routeway", "operator", "-n", "default", "--no-liveness", "--peering", "rw", cfg=cfg
    )
    try:
        code = await asyncio.wait_for(operator.proc.wait(), START)
    except TimeoutError:
        pytest.fail(f"the operator still runs after {START:.0f} s without its peering:\n{operator.log()}")
    assert code == 1, operator.log()
    assert "Traceback" not in operator.log()
    assert "KopfPeering 'rw' not found in namespace(s) default" in operator.log()
    assert "kind: KopfPeering, metadata: {name: rw, namespace: default}" in operator.log()
    assert kmock.writes() == []  # it stopped before touching anything
