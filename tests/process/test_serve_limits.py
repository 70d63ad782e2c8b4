"""Limits of whole `routeway serve` processes: one budget per gateway, however it is served.

Covers: the two workers of one `serve --workers 2` admit a route's 4 requests a minute once,
not once each (the supervisor's shared table), and not a replica's share either (`serve` is
one machine whatever `ModelGateway.spec.replicas` says); the group's `/metrics` counts the
workers' rejections; two `serve` processes configured with the same Redis share one budget.

Requests go over fresh connections, so the kernel spreads them over the workers. A route's
budget refills at 4 a minute (one request per 15 s): the bursts here take well under that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from process_rig import Launch, Routeway, Upstream, eventually, manifest
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, running_redis

RPM = 4


def manifests(upstream: Upstream, redis_url: str | None = None) -> str:
    """A route limited to RPM requests a minute, on a gateway of 3 replicas."""
    text = manifest(upstream.url).replace(
        "  backends: [{name: upstream}]\n",
        f"  backends: [{{name: upstream}}]\n  limits: {{requestsPerMinute: {RPM}}}\n",
    )
    redis = f"  limits: {{redis: {{url: '{redis_url}'}}}}\n" if redis_url else ""
    return (
        text
        + f"""\
---
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {{name: default, namespace: default}}
spec:
  replicas: 3
{redis}"""
    )


async def ready(routeway: Routeway) -> bool:
    return (await routeway.get_admin("/readyz"))[0] == 200


async def burst(routeways: list[Routeway], each: int) -> list[int]:
    codes = []
    for _ in range(each):
        for routeway in routeways:
            response = await routeway.chat()
            codes.append(response.status)
            if response.status == 200:
                assert response.headers["x-ratelimit-limit-requests"] == str(RPM)
    return codes


async def rejections(routeway: Routeway) -> float:
    _, text = await routeway.get_admin("/metrics")
    for family in text_string_to_metric_families(text):
        if family.name == "routeway_ratelimit_rejections":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("route") == "default/chat"
            )
    return 0.0


async def test_two_workers_admit_the_limit_once(launch: Launch, upstream: Upstream, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(manifests(upstream))
    routeway = await launch("serve", "-f", str(path), workers=2)
    await eventually(lambda: ready(routeway), what=f"both workers\n{routeway.log()}", within=30)
    codes = await burst([routeway], 12)
    assert codes.count(200) == RPM, routeway.log()
    assert codes.count(429) == 12 - RPM
    assert await rejections(routeway) == 12 - RPM
    assert await routeway.stop() == 0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def test_two_serve_processes_share_one_redis(
    launch: Launch, upstream: Upstream, tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(manifests(upstream, redis_server.url))
    first = await launch("serve", "-f", str(path))
    second = await launch("serve", "-f", str(path))
    codes = await burst([first, second], 6)
    assert codes.count(200) == RPM, first.log() + second.log()
    assert codes.count(429) == 12 - RPM
    assert await rejections(first) + await rejections(second) == 12 - RPM
