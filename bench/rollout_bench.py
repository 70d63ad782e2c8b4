"""Rollout analysis under `routeway serve`: the cost of one round over many routes in rollout.

    .venv/bin/python bench/rollout_bench.py [--routes 1000] [--backends 100] [--window 300] [--rounds 5]

Pure (no process, no socket): `ServeRollouts` (routeway/serve_rollouts.py) with every route in
a rollout whose analysis checks three metrics (errorRate, latencyP95, ttftP95 against the
stable arm) every 30s over a `--window`-second window. One sample of the observation report
(both arms of every route, cumulative counts and 22-bucket histograms, as the proxy serves it)
is added per second, as serve's timer does; a round is `tick(now)` when every route's check is
due: for each route the window of its arms out of the samples, the verdict, the step, and
then one `serve_rollouts` of the whole config. CPU seconds of this process per round (best and
median of --rounds; each round adds the 30 samples the interval brings, outside the timing).

Routes come from bench/translate_bench.py's inventory (with a strategy added); the rollout is
a ModelBackend edit of every backend, so every route gets a new revision at once. Prints
markdown; numbers go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from translate_bench import build_documents, build_objects

from routeway.render import render_all
from routeway.resources import ModelRoute
from routeway.rollout import ArmObservation, Histogram, Report
from routeway.serve_rollouts import ServeRollouts
from routeway.translate import Inventory, translate

INTERVAL = 30.0
LATENCY = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
LATENCY += (15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
TTFT += (5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
STRATEGY = {
    "canary": {
        "steps": [{"setWeight": 10}, {"pause": {}}],
        "analysis": {
            "interval": "30s",
            "window": "5m",
            "minRequests": 10,
            "onInconclusive": "Continue",
            "metrics": [
                {"name": "errorRate", "max": 0.05},
                {"name": "latencyP95", "max": "20s"},
                {"name": "ttftP95", "maxRatioToStable": 1.3},
            ],
        },
    }
}


def configs(routes: int, backends: int, window: float) -> tuple[Any, Any, dict[str, dict[str, Any]]]:
    docs = build_documents(routes, backends)
    for doc in docs:
        if doc["kind"] == "ModelRoute":
            doc["spec"]["strategy"] = STRATEGY
            doc["spec"]["strategy"]["canary"]["analysis"]["window"] = f"{int(window)}s"
    objects = build_objects(docs)
    specs = {
        f"{o.namespace}/{o.name}": o.spec.model_dump(by_alias=True, mode="json")
        for o in objects
        if isinstance(o, ModelRoute)
    }
    before = next(iter(render_all(translate(Inventory.from_objects(objects))).values()))
    for doc in docs:
        if doc["kind"] == "ModelBackend":
            doc["spec"]["model"] = f"{doc['spec'].get('model', 'm')}-v2"
    after = next(iter(render_all(translate(Inventory.from_objects(build_objects(docs)))).values()))
    return before, after, specs


def histogram(bounds: tuple[float, ...], total: int, spread: int) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    for i in range(spread):
        counts[2 + i] += total // spread
    counts[2] += total - sum(counts)
    return Histogram(bounds, tuple(counts))


def report(served: Any, second: int) -> Report:
    arms: dict[tuple[str, str], ArmObservation] = {}
    for route in served.routes:
        n = 10 * second
        arms[(route.id, route.revision)] = ArmObservation(
            success=9 * n,
            server_error=n // 100,
            latency=histogram(LATENCY, 9 * n, 3),
            ttft=histogram(TTFT, 9 * n, 3),
        )
        if route.canary is not None:
            arms[(route.id, route.canary.revision)] = ArmObservation(
                success=n, latency=histogram(LATENCY, n, 3), ttft=histogram(TTFT, n, 3)
            )
    return Report("bench", 0.0, arms)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--window", type=float, default=300.0, help="analysis window, seconds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    before, after, specs = configs(args.routes, args.backends, args.window)
    rollouts = ServeRollouts()
    rollouts.load(before, specs, 0.0)
    rollouts.load(after, specs, 1.0)  # every route: a new revision, rollout at 10%
    served = rollouts.served()
    assert served is not None and all(r.canary is not None for r in served.routes)
    second = 1
    for second in range(1, int(args.window) + 1):  # a full window of samples before the first round
        rollouts.observe(report(served, second), float(second))
    times = []
    now = 1.0
    while now <= second:
        now += INTERVAL
    for _ in range(args.rounds + 1):
        while second < now:
            second += 1
            rollouts.observe(report(served, second), float(second))
        gc.collect()
        start = time.process_time()
        rollouts.tick(now)
        times.append(time.process_time() - start)
        assert rollouts.document(served.routes[0].id)["lastCheck"]["verdict"] == "pass"
        now += INTERVAL
    times = times[1:]  # the first one warms up
    routes = len(served.routes)
    print("| routes in rollout | samples in window | best s/round | median s/round | median ms/route |")
    print("|---:|---:|---:|---:|---:|")
    median = statistics.median(times)
    print(
        f"| {routes} | {int(args.window)} | {min(times):.3f} | {median:.3f} | {1000 * median / routes:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
