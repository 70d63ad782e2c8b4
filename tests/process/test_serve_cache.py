"""The response cache under `routeway serve`: Redis shared between processes, Redis failing.

Covers: two `serve` processes on one Redis (with a password from a Secret in the manifests)
share an answer — the second process answers it without calling the upstream; with
`--workers 2` the group's admin `/metrics` shows `routeway_cache_requests_total`; Redis killed
under a running `serve` still answers every request (a miss, then this process's own hit) and
counts the shared tier's errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from process_rig import Launch, Routeway, Upstream, eventually, write_atomically
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, running_redis

PASSWORD = "cache-redis-pw"


@pytest.fixture
def redis_rig() -> Iterator[RedisServer]:
    with running_redis() as server:
        redis.Redis(port=server.port).config_set("requirepass", PASSWORD)
        yield server


def cached_manifest(upstream_url: str, redis_url: str) -> str:
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {{name: default, namespace: default}}
spec:
  limits:
    redis: {{url: "{redis_url}", passwordSecretRef: {{name: redis-auth, key: password}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: redis-auth, namespace: default}}
stringData: {{password: {PASSWORD}}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: upstream, namespace: default}}
spec: {{provider: openai, url: "{upstream_url}", model: model-a}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: chat, namespace: default}}
spec:
  model: chat
  backends: [{{name: upstream}}]
  cache: {{ttl: 10m, maxBytes: 1Mi, scope: Route}}
"""


def shared_entries(server: RedisServer) -> int:
    return len(redis.Redis(port=server.port, password=PASSWORD).keys("routeway:cache:*"))


async def metric(routeway: Routeway, name: str, **labels: str) -> float:
    _, text = await routeway.get_admin("/metrics")
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def ask(routeway: Routeway, text: str) -> tuple[int, str | None]:
    response = await routeway.chat(messages=[{"role": "user", "content": text}])
    return response.status, response.headers.get("x-routeway-cache")


async def test_two_serve_processes_share_answers_through_redis(
    launch: Launch, upstream: Upstream, redis_rig: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "models.yaml"
    write_atomically(path, cached_manifest(upstream.url, redis_rig.url))
    first = await launch("serve", "-f", str(path), workers=2)
    second = await launch("serve", "-f", str(path))

    async def ready() -> bool:  # /healthz is the supervisor's; the workers listen a moment later
        return (await first.get_admin("/readyz"))[0] == 200

    await eventually(ready, what="both workers listening")
    assert await ask(first, "shared") == (200, "miss")

    async def stored() -> bool:
        return shared_entries(redis_rig) == 1

    await eventually(stored, what="the answer in Redis")
    assert await ask(second, "shared") == (200, "hit")
    assert len(upstream.seen) == 1
    hits = await metric(second, "routeway_cache_requests_total", route="default/chat", result="hit")
    misses = await metric(first, "routeway_cache_requests_total", route="default/chat", result="miss")
    assert (hits, misses) == (1, 1)  # the group of two workers reports through its admin port
    assert await metric(first, "routeway_cache_bytes", route="default/chat") > 0
    assert PASSWORD not in first.log() + second.log()


async def test_a_killed_redis_never_fails_an_answer(
    launch: Launch, upstream: Upstream, redis_rig: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "models.yaml"
    write_atomically(path, cached_manifest(upstream.url, redis_rig.url))
    routeway = await launch("serve", "-f", str(path))
    assert await ask(routeway, "before") == (200, "miss")
    redis_rig.kill()
    assert await ask(routeway, "after") == (200, "miss")  # the shared tier fails to a miss
    assert await ask(routeway, "after") == (200, "hit")  # this process's own tier still serves
    assert await ask(routeway, "before") == (200, "hit")
    assert len(upstream.seen) == 2
    assert await metric(routeway, "routeway_cache_redis_errors_total") >= 1
    assert "the shared Redis tier failed" in routeway.log()
