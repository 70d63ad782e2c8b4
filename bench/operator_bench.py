"""Operator benchmark against kmock (not a test): latency of a route change, reconcile cost.

For 1, 100 and 1,000 routes on one gateway, in one process (kmock emulator + the real kopf
operator + the in-cluster proxy source feeding a real ProxyRuntime):

- converge: operator start → every route Ready (initial reconcile, status writes included);
- change→ConfigMap: PATCH of one route's weights → the ConfigMap's revision annotation changes;
- change→proxy: the same PATCH → the proxy runtime serves that revision;
- reconcile: one forced reconcile of the gateway with nothing changed (snapshot, translate,
  render, hash compare; writes nothing), median of 5, and its peak Python allocation;
- RSS of the whole process at the end (kmock's object store included).

The operator's default debounce (0.2 s) is part of both latencies, on purpose: it is what a
user sees. Numbers depend on the machine; kmock is slower per request than an API server.

    .venv/bin/python bench/operator_bench.py [--routes 1,100,1000] [--debounce 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

import kmock as kmock_lib  # noqa: E402
from conftest import load_crds  # noqa: E402
from kmock_ext import RoutewayEmulator  # noqa: E402
from operator_factories import backend, gateway, get, route, seed  # noqa: E402
from rig import ROUTES, TEST_SETTINGS, running_operator, settled  # noqa: E402
from routeway_operator.reconcile.gateway import reconcile_gateway  # noqa: E402
from routeway_proxy.config_apply import ConfigApplier  # noqa: E402
from routeway_proxy.kube_source import KubeConfigSource  # noqa: E402
from routeway_proxy.runtime import ProxyRuntime  # noqa: E402


async def wait(check: Any, within: float = 600.0, step: float = 0.002) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < within:
        if check():
            return time.perf_counter() - start
        await asyncio.sleep(step)
    raise TimeoutError("benchmark condition not met")


def revision(km: RoutewayEmulator) -> str | None:
    cm = get(km, "v1/configmaps", "routeway-gw-config")
    return cm["metadata"]["annotations"]["routeway.dev/config-revision"] if cm else None


def all_ready(km: RoutewayEmulator, routes: int, generation: int = 1) -> bool:
    for i in range(routes):
        obj = get(km, ROUTES, f"r{i:04d}")
        conds = ((obj or {}).get("status") or {}).get("conditions") or []
        if not any(
            c["type"] == "Ready" and c["status"] == "True" and c["observedGeneration"] == generation
            for c in conds
        ):
            return False
    return True


async def bench_one(routes: int, debounce: float) -> dict[str, float]:
    emulator = RoutewayEmulator()
    emulator.add_builtins()
    for crd in load_crds():
        emulator.add_crd(crd)
    emulator.seed("v1/namespaces", None, {"metadata": {"name": "default"}})
    async with emulator, kmock_lib.Server(emulator):
        seed(emulator, gateway("gw"), backend("b1"), backend("b2"))
        seed(emulator, *(route(f"r{i:04d}", f"model-{i:04d}", {"b1": 90, "b2": 10}) for i in range(routes)))
        started = time.perf_counter()
        async with running_operator(emulator, TEST_SETTINGS, debounce=debounce) as state:
            await wait(lambda: all_ready(emulator, routes))
            converge = time.perf_counter() - started
            await asyncio.sleep(1.0)
            await state.reconciler.wait_idle()

            runtime = ProxyRuntime()
            source = KubeConfigSource(
                "default", "routeway-gw-config", "routeway-gw-credentials", server=str(emulator.url)
            )
            follower = asyncio.create_task(ConfigApplier(runtime, announce=False).run(source))
            await wait(lambda: runtime.config is not None and runtime.config.revision == revision(emulator))

            to_cm: list[float] = []
            to_proxy: list[float] = []
            for n in range(3):
                before = revision(emulator)
                t0 = time.perf_counter()
                resp = await emulator.patch(
                    "/apis/routeway.dev/v1alpha1/namespaces/default/modelroutes/r0000",
                    json={
                        "spec": {
                            "backends": [{"name": "b1", "weight": 80 - n}, {"name": "b2", "weight": 20 + n}]
                        }
                    },
                )
                assert resp.status == 200
                await wait(lambda before=before: revision(emulator) not in (None, before))
                to_cm.append(time.perf_counter() - t0)
                target = revision(emulator)
                await wait(
                    lambda target=target: runtime.config is not None and runtime.config.revision == target
                )
                to_proxy.append(time.perf_counter() - t0)
                await asyncio.sleep(0.5)
                await state.reconciler.wait_idle()

            await settled(emulator, state, quiet=1.0, within=300)  # kopf has digested every watch event
            durations = []
            for _ in range(5):
                t0 = time.perf_counter()
                await reconcile_gateway(state, ("default", "gw"))
                durations.append(time.perf_counter() - t0)
            tracemalloc.start()  # separately: tracing allocations slows them down severalfold
            await reconcile_gateway(state, ("default", "gw"))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    return {
        "routes": routes,
        "converge_s": converge,
        "change_to_configmap_ms": statistics.median(to_cm) * 1000,
        "change_to_proxy_ms": statistics.median(to_proxy) * 1000,
        "reconcile_noop_ms": statistics.median(durations) * 1000,
        "reconcile_peak_alloc_mib": peak / 2**20,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routes", default="1,100,1000")
    parser.add_argument("--debounce", type=float, default=0.2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.ERROR)
    print(
        "| routes | converge (s) | change→ConfigMap (ms) | change→proxy (ms) | no-op reconcile (ms) | reconcile peak alloc (MiB) | RSS (MiB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.routes.split(",")):
        r = await bench_one(n, args.debounce)
        print(
            f"| {r['routes']} | {r['converge_s']:.2f} | {r['change_to_configmap_ms']:.0f} | {r['change_to_proxy_ms']:.0f} "
            f"| {r['reconcile_noop_ms']:.1f} | {r['reconcile_peak_alloc_mib']:.1f} | {r['rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
