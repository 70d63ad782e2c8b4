"""Observations of a whole process group, and the `SourceHost` seam a config source gets.

Covers: with `--workers 2` the supervisor's `GET /observations` sums every worker's attempts
of both arms of a route in a rollout (requests on fresh connections, spread by the kernel),
with one `instance` and `startedAt` for the group's lifetime; a tiny `ConfigSource` that
defines `attach` is handed the host before its `watch()` opens, in a single process and in a
supervisor, and its admin route serves the host's in-process observations, which agree with
`GET /observations`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from process_rig import LISTENING, STARTUP_DEADLINE, Launch, Routeway, Upstream, eventually

from routeway.proxyconfig import BackendConfig, GatewayConfig, ProxyConfig, RouteConfig
from routeway.rollout.serving import ServedRoute, desired_revisions, serve_rollouts

REQUESTS = 20


def backend(name: str, url: str) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "id": f"ns/{name}",
            "namespace": "ns",
            "name": name,
            "provider": "openai",
            "url": url,
            "timeouts": {"connect": 2.0, "firstByte": 5.0, "idle": 5.0},
            "queueTimeout": 0.0,
            "outlierDetection": {"consecutiveFailures": 3, "baseEjection": 30.0, "maxEjection": 300.0},
        }
    )


def config_with(upstream_url: str, target_model: str) -> ProxyConfig:
    route = RouteConfig.model_validate(
        {
            "id": "ns/chat",
            "namespace": "ns",
            "name": "chat",
            "model": "chat",
            "targets": [{"backend": "ns/up", "model": target_model, "weight": 1}],
            "retries": {"attempts": 0},
        }
    )
    return ProxyConfig(
        gateway=GatewayConfig.model_validate({"namespace": "ns", "name": "gw", "maxBodyBytes": 1_000_000}),
        backends=(backend("up", upstream_url),),
        routes=(route,),
    ).with_revision()


def rollout_config(upstream: Upstream) -> ProxyConfig:
    """Route `chat` in a rollout at 50%: the revisions differ by the model name sent upstream."""
    stable, desired = config_with(upstream.url, "m-stable"), config_with(upstream.url, "m-canary")
    served = ServedRoute(desired_revisions(stable)["ns/chat"], desired_revisions(desired)["ns/chat"], 50)
    return serve_rollouts(desired, {"ns/chat": served})


def successes(document: dict[str, Any]) -> dict[str, int]:
    return {arm["arm"]: arm["outcomes"]["success"] for arm in document["arms"]}


async def test_supervisor_reports_every_workers_attempts(
    launch: Launch, upstream: Upstream, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(rollout_config(upstream).to_json())
    routeway = await launch("proxy", "--config", str(path), workers=2)
    await eventually(lambda: ready(routeway), what="both workers listening")
    _, first = await routeway.get_admin("/observations")
    for _ in range(REQUESTS):
        assert (await routeway.chat()).status == 200  # a fresh connection each: spread over workers

    async def counted() -> dict[str, Any] | None:
        _, document = await routeway.get_admin("/observations")
        return document if sum(successes(document).values()) == REQUESTS else None

    document = await eventually(counted, what=f"{REQUESTS} successes in the group's observations")
    assert set(successes(document)) == {"stable", "canary"}
    assert all(count > 0 for count in successes(document).values())
    assert sum(sum(arm["latency"]["counts"]) for arm in document["arms"]) == REQUESTS
    assert (document["instance"], document["startedAt"]) == (first["instance"], first["startedAt"])
    assert {s["model"] for s in upstream.seen} == {"m-stable", "m-canary"}


async def ready(routeway: Routeway) -> bool:
    return (await routeway.get_admin("/readyz"))[0] == 200


TINY_SOURCE = '''
import asyncio, sys
from aiohttp import web
from routeway.configupdate import ConfigLoaded
from routeway.proxyconfig import parse_proxy_config
from routeway_proxy.process import ServeOptions, run_proxy


class TinySource:
    """Serves one config file; asks the host for an admin route of its own."""

    def __init__(self, path):
        self.path = path
        self.watching = False
        self.attached_before_watch = None

    def describe(self):
        return "tiny source"

    def attach(self, host):
        self.attached_before_watch = not self.watching

        async def tiny(request):
            return web.json_response(
                {"attachedBeforeWatch": self.attached_before_watch, "observations": host.observations()}
            )

        host.add_admin_route("GET", "/tiny", tiny)

    async def watch(self):
        self.watching = True
        with open(self.path, "rb") as fh:
            config = parse_proxy_config(fh.read())
        yield ConfigLoaded(config, {}, "tiny source")
        await asyncio.Event().wait()


if __name__ == "__main__":
    options = ServeOptions("127.0.0.1", 0, 0, workers=int(sys.argv[2]), drain_timeout=5.0)
    sys.exit(run_proxy(TinySource(sys.argv[1]), options))
'''


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_source_is_attached_to_the_host_before_watching(
    upstream: Upstream, tmp_path: Path, workers: int
) -> None:
    script = tmp_path / "tiny_source.py"
    script.write_text(TINY_SOURCE)
    config = tmp_path / "config.json"
    config.write_bytes(rollout_config(upstream).to_json())
    log_path = tmp_path / "tiny.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(config), str(workers),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
        )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        routeway = Routeway(proc, 0, 0, log_path, session)
        try:

            async def listening() -> Any:
                assert proc.returncode is None, routeway.log()
                return LISTENING.search(log_path.read_bytes())

            found = await eventually(listening, within=STARTUP_DEADLINE, what="the startup line")
            routeway.port, routeway.admin_port = int(found[1]), int(found[2])
            await eventually(lambda: ready(routeway), within=STARTUP_DEADLINE, what="ready")
            for _ in range(4):
                assert (await routeway.chat()).status == 200

            async def tiny() -> Any:
                status, document = await routeway.get_admin("/tiny")
                assert status == 200, document
                return document if sum(successes(document["observations"]).values()) == 4 else None

            document = await eventually(tiny, what="the source's own admin route counting 4 successes")
            assert document["attachedBeforeWatch"] is True
            _, served = await routeway.get_admin("/observations")
            assert orjson.dumps(served["arms"]) == orjson.dumps(document["observations"]["arms"])
            assert served["instance"] == document["observations"]["instance"]
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
