"""Routes in a rollout: two arms through the real gateway, configs made by `serve_rollouts`.

Matrix: the split without a stickiness key is exact (weight 10 → 10 of 100 on the canary,
50 → 50, 0 → none); a sticky key keeps its arm and every key on the canary at 10 is still
there at 50; `x-routeway-arm` on a success, a gateway-made error and a stream of a route in a
rollout, and on no answer of a route without one; a pinned backend (one backend id, the stable
arm's spec → upstream A, the canary's → upstream B) with its own health; `/routes` shows each
route's revision and the canary arm.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
import orjson
from openai import AsyncOpenAI
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route

from routeway.proxyconfig import ProxyConfig
from routeway.rollout.serving import ServedRoute, desired_revisions, serve_rollouts

CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
CLOSED_PORT_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens, connect fails at once


def rollout(stable: ProxyConfig, desired: ProxyConfig, percent: float, route: str = "ns/gpt") -> ProxyConfig:
    """`desired` serving its route `route` as a canary at `percent` beside `stable`'s."""
    served = ServedRoute(desired_revisions(stable)[route], desired_revisions(desired)[route], percent)
    return serve_rollouts(desired, {route: served})


def two_arm_config(upstream: Upstream, percent: float, sticky: str | None = None) -> ProxyConfig:
    """Stable arm → backend a (behaviour ok), canary arm → backend b (behaviour flaky-0)."""
    backends = [make_backend("a", upstream.base("ok")), make_backend("b", upstream.base("flaky-0"))]
    stable = make_config(backends, [make_route("gpt", [("a", 1)], sticky=sticky)])
    desired = make_config(backends, [make_route("gpt", [("b", 1)], sticky=sticky)])
    return rollout(stable, desired, percent)


def client(gateway: Gateway) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=10)


async def arms_of(gateway: Gateway, count: int, headers: dict[str, str] | None = None) -> list[str]:
    arms = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(
                f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT), headers=headers
            ) as response:
                await response.read()
                assert response.status == 200
                arms.append(response.headers["x-routeway-arm"])
    return arms


async def test_split_without_a_key_is_exact(gateway: Gateway, upstream: Upstream) -> None:
    for percent, expected in ((10, 10), (50, 50), (0, 0)):
        gateway.runtime.apply(two_arm_config(upstream, percent), {})
        upstream.seen.clear()
        arms = await arms_of(gateway, 100)
        assert Counter(arms) == +Counter({"canary": expected, "stable": 100 - expected})
        # the canary arm's own targets answered its requests
        behaviours = Counter(s.behaviour for s in upstream.seen)
        assert behaviours == +Counter({"flaky-0": expected, "ok": 100 - expected})


async def test_sticky_keys_keep_their_arm_as_the_weight_grows(gateway: Gateway, upstream: Upstream) -> None:
    keys = [f"user-{i}" for i in range(120)]
    on_canary: dict[int, set[str]] = {}
    for percent in (10, 50):
        gateway.runtime.apply(two_arm_config(upstream, percent, sticky="x-session"), {})
        on_canary[percent] = set()
        for key in keys:
            arms = await arms_of(gateway, 2, {"x-session": key})
            assert arms[0] == arms[1]  # the same key, the same arm
            if arms[0] == "canary":
                on_canary[percent].add(key)
    assert on_canary[10]
    assert on_canary[10] < on_canary[50]  # every canary key at 10 is still there at 50
    assert len(on_canary[50]) < len(keys)


async def test_arm_header_on_success_error_and_stream(gateway: Gateway, upstream: Upstream) -> None:
    backends = [make_backend("a", upstream.base("ok")), make_backend("dead", CLOSED_PORT_URL)]
    stable = make_config(backends, [make_route("gpt", [("a", 1)])])
    desired = make_config(backends, [make_route("gpt", [("dead", 1)])])
    gateway.runtime.apply(rollout(stable, desired, 50), {})
    async with aiohttp.ClientSession() as session:
        statuses = {}
        for _ in range(2):
            async with session.post(f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT)) as response:
                body = await response.json()
                statuses[response.headers["x-routeway-arm"]] = (response.status, body)
    status, body = statuses["canary"]
    assert status == 502 and body["error"]["code"] == "upstream_connect_error"  # the gateway's own answer
    assert statuses["stable"][0] == 200
    # streams carry it too, on the arm that answered
    stable_only = rollout(stable, make_config(backends, [make_route("gpt", [("a", 1)], attempts=1)]), 100)
    gateway.runtime.apply(stable_only, {})
    async with client(gateway) as c:
        raw_stream = await c.chat.completions.with_raw_response.create(
            model="gpt",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        assert raw_stream.headers["x-routeway-arm"] == "canary"
        text = "".join(
            [chunk.choices[0].delta.content or "" async for chunk in raw_stream.parse() if chunk.choices]
        )
        assert text == "Hello"
    # a route without a canary: no arm header
    gateway.runtime.apply(stable, {})
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT)) as response,
    ):
        assert response.status == 200
        assert "x-routeway-arm" not in response.headers


async def test_pinned_backend_spec_per_arm(gateway: Gateway, upstream: Upstream) -> None:
    # one backend id "a": the stable revision was made with url A, the canary with url B
    stable = make_config([make_backend("a", upstream.base("ok"))], [make_route("gpt", [("a", 1)])])
    desired = make_config(
        [make_backend("a", upstream.base("flaky-0"), failures=1)], [make_route("gpt", [("a", 1)])]
    )
    config = rollout(stable, desired, 50)
    route = config.routes[0]
    assert [b.url for b in route.pinned_backends] == [upstream.base("ok")]  # the stable arm's own spec
    gateway.runtime.apply(config, {})
    behaviour_by_arm: dict[str, set[str]] = {"stable": set(), "canary": set()}
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            before = len(upstream.seen)
            async with session.post(f"{gateway.v1}/chat/completions", data=orjson.dumps(CHAT)) as response:
                await response.read()
                assert response.status == 200
                assert response.headers["x-routeway-backend"] == "ns/a"
                behaviour_by_arm[response.headers["x-routeway-arm"]].add(upstream.seen[before].behaviour)
    assert behaviour_by_arm == {"stable": {"ok"}, "canary": {"flaky-0"}}
    # distinct entries: health of one spec is not the other's
    table = gateway.runtime.table
    assert table is not None
    entry = table.routes["gpt"]
    assert entry.canary is not None
    stable_backend, canary_backend = entry.targets[0].backend, entry.canary.targets[0].backend
    assert stable_backend is not canary_backend and stable_backend.pinned and not canary_backend.pinned
    canary_backend.health.record_failure()
    assert canary_backend.health.is_ejected() and not stable_backend.health.is_ejected()
    # re-applying the same config keeps the pinned entry's state
    gateway.runtime.apply(config.model_copy(update={"revision": "again"}), {})
    again = gateway.runtime.table
    assert again is not None
    assert again.routes["gpt"].targets[0].backend.health is stable_backend.health


async def test_routes_document_shows_revision_and_canary(gateway: Gateway, upstream: Upstream) -> None:
    config = two_arm_config(upstream, 10)
    gateway.runtime.apply(config, {})
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin_url}/routes") as response:
        document = await response.json()
    (route,) = document["routes"]
    canary = config.routes[0].canary
    assert canary is not None
    assert route["revision"] == config.routes[0].revision
    assert route["targets"][0]["backend"] == "ns/a"
    assert route["canary"]["revision"] == canary.revision
    assert route["canary"]["weight"] == 10
    assert [t["backend"] for t in route["canary"]["targets"]] == ["ns/b"]


async def test_reloads_do_not_starve_the_canary(gateway: Gateway, upstream: Upstream) -> None:
    """Any config change rebuilds every route's table entry (another route's rollout step, a
    backend edit elsewhere): a route at 10% must still send about 10% to its canary when
    reloads come more often than every 10 of its requests, not none at all."""
    backends = [
        make_backend("a", upstream.base("ok")),
        make_backend("b", upstream.base("flaky-0")),
        make_backend("c", upstream.base("ok")),
    ]
    stable = make_config(backends, [make_route("gpt", [("a", 1)]), make_route("other", [("c", 1)])])
    arms: list[str] = []
    for reload in range(40):
        # the same rollout of gpt; only the unrelated route `other` changes (a new config revision)
        desired = make_config(
            backends,
            [make_route("gpt", [("b", 1)]), make_route("other", [("c", 1, f"m-{reload}")])],
        )
        gateway.runtime.apply(rollout(stable, desired, 10), {})
        arms += await arms_of(gateway, 5)
    counts = Counter(arms)
    assert 8 <= counts["canary"] <= 32, counts  # 10% of 200 is 20 (binomial 40 x 0.5: ±3.8 sd)
