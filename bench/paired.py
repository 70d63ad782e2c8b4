"""CPU per request of Routeway against the yardstick, measured side by side at the same moments.

    .venv/bin/python bench/paired.py [--connections 1,16,64] [--rounds 10] [--duration 3] [--workers 1]

Why a second method next to `run.py`: on this shared VM the cost of the same code moves by
10-30% from one minute to the next (other tenants of the host), so two targets measured one
after the other — even interleaved in rounds — can differ by more than the effect measured
(`run.py` runs of the same commit gave 0.84 and 0.94 for the same ratio). Here both proxies are
pinned to the same core and loaded at the same time by two wrk processes (pinned, with the
upstream, to the other core), so whatever slows the machine slows both; each round gives one
ratio of their CPU time per request, and the report is the median and spread of those ratios.

What it does not measure: absolute throughput or latency (each proxy gets half a core) — those
come from `run.py`. It needs `taskset` (util-linux) and at least two cores.

A/B of a change: `--against /tmp/bvenv/bin/python` puts another Routeway install (a venv with
an earlier commit installed non-editably, see CONTRIBUTING.md) in the yardstick's place, so the
ratio reads base/working-tree; the same code against itself reads 0.99-1.01.

The response cache: `--cache miss` gives the measured Routeway's route a cache (the other side
keeps the plain route) and loads both with `post_unique.lua`, a new prompt per request, so
every request misses and is stored: the ratio is what a miss costs against a route without
a cache. `--cache hit` loads both with the constant body: every request after the first is a
hit on the measured side.

Client keys and limits: `--limits` gives the measured Routeway a gateway that requires keys,
20 ModelClients with every limit, and route limits (run.py's `CLIENTS_MANIFESTS`,
`LIMITS_SPEC`; all far above the load, so nothing is refused), in the process's own store
(`LimitStore` local, one worker); the load's key is a client's. The other side serves the
plain open route: the ratio is what authentication, the model check, five budgets reserved
and settled and the `x-ratelimit-*` headers cost per request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    CACHE_SPEC,
    CLIENTS_MANIFESTS,
    LIMITS_SPEC,
    MANIFESTS,
    OUT,
    PLAIN_BODY,
    PYTHON,
    ROUTEWAY,
    cpu_seconds,
    free_port,
    git_state,
    started,
    wait_http,
)

PROXY_CPU = "1"
LOAD_CPU = "0"


def wrk(url: str, connections: int, seconds: float, script: str = "post.lua") -> int:
    """Requests completed by a pinned wrk run (non-2xx answers count as failures)."""
    command = [
        "taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
        "-s", str(BENCH / script), url + "/v1/chat/completions",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCHJSON "))
    result = json.loads(line.removeprefix("BENCHJSON "))
    if sum(result["errors"].values()):
        raise RuntimeError(f"{url}: wrk saw errors {result['errors']}")
    return int(result["requests"])


def measure(
    targets: dict[str, tuple[int, str]], connections: int, rounds: int, seconds: float, script: str
) -> dict[str, Any]:
    names = list(targets)
    per_request: dict[str, list[float]] = {name: [] for name in names}
    ratios: list[float] = []
    with ThreadPoolExecutor(len(names)) as pool:
        for _ in range(rounds):
            list(pool.map(lambda name: wrk(targets[name][1], connections, 1, script), names))  # warm-up
            before = {name: cpu_seconds(targets[name][0]) for name in names}
            counts = dict(
                zip(
                    names,
                    pool.map(lambda name: wrk(targets[name][1], connections, seconds, script), names),
                    strict=True,
                )
            )
            after = {name: cpu_seconds(targets[name][0]) for name in names}
            for name in names:
                per_request[name].append((after[name] - before[name]) * 1e6 / max(counts[name], 1))
            ratios.append(per_request["yardstick"][-1] / per_request["routeway"][-1])
    ratios.sort()
    unit = "stream" if script == "stream.lua" else "request"
    point = {
        "connections": connections,
        "cpu_us_per_request": {name: statistics.median(values) for name, values in per_request.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "ratios": ratios,
    }
    print(
        f"  c={connections:<3} yardstick/routeway CPU per {unit}: median {point['ratio_median']:.3f} "
        f"(rounds {ratios[0]:.3f}..{ratios[-1]:.3f}); us/{unit} yardstick "
        f"{point['cpu_us_per_request']['yardstick']:.0f}, routeway {point['cpu_us_per_request']['routeway']:.0f}",
        flush=True,
    )
    return point


ROLLOUT_MANIFESTS = """\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: fast-upstream, namespace: default}}
spec:
  provider: openai
  url: http://127.0.0.1:{port}/v1
  model: bench-model
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: fast-upstream-v2, namespace: default}}
spec:
  provider: openai
  url: http://127.0.0.1:{port}/v1
  model: bench-model
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: bench, namespace: default}}
spec:
  model: bench
  backends:
    - name: {backend}
  strategy:
    canary:
      steps: [{{setWeight: 50}}, {{pause: {{}}}}]
      analysis:
        interval: 5s
        minRequests: 1000000000
        onInconclusive: Continue
        metrics: [{{name: errorRate, max: 0.5}}]
"""
"""`--rollout`: the route as it starts (stable on fast-upstream), then edited to fast-upstream-v2,
which the strategy holds at 50% (a `pause: {}` step) with analysis checks every 5 s that never
conclude (minRequests out of reach, onInconclusive Continue): both arms served, observed and
judged for the whole measurement."""


def start_rollout(folder: Path, upstream: int, admin: int) -> None:
    """Edit the route to its new revision and wait until the rollout holds at 50%."""
    (folder / "bench.yaml").write_text(ROLLOUT_MANIFESTS.format(port=upstream, backend="fast-upstream-v2"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/rollouts", timeout=2) as answer:
                rollouts = json.load(answer)["rollouts"]
            if rollouts and rollouts[0]["phase"] == "Paused" and rollouts[0]["canaryWeight"] == 50:
                return
        time.sleep(0.2)
    raise RuntimeError("the rollout did not reach its 50% pause")


def routeway_serve(
    folder: Path, port: int, workers: int, python: str | None = None, admin: int | None = None
) -> list[str]:
    """`routeway serve` of this venv, or of the Routeway installed for `python` (which must
    not see the working tree: safe-path mode, started from its own directory)."""
    if python is None:
        command = [ROUTEWAY]
    else:
        entry = "import sys; from routeway.cli import main; sys.argv[0] = 'routeway'; sys.exit(main())"
        command = ["env", "PYTHONSAFEPATH=1", python, "-c", entry]
    command += ["serve", "-f", str(folder), "--port", str(port), "--admin-port", str(admin or free_port())]
    return [*command, "--workers", str(workers), "--log-level", "warning"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per round")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per proxy")
    parser.add_argument(
        "--stream", action="store_true", help="streamed requests (bench/stream.lua): CPU per stream"
    )
    parser.add_argument(
        "--cache",
        choices=("off", "miss", "hit"),
        default="off",
        help="the measured Routeway's route gets a response cache; miss: a new prompt per request",
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help="the measured Routeway requires keys: a ModelClient's, with client and route limits",
    )
    parser.add_argument(
        "--python",
        metavar="PYTHON",
        help="measure the Routeway installed for this Python (e.g. a compiled build)",
    )
    parser.add_argument(
        "--against",
        metavar="PYTHON",
        help="a Python with another Routeway installed, in place of the yardstick",
    )
    parser.add_argument(
        "--rollout",
        action="store_true",
        help="a route in a rollout (both arms at 50%%, observed and judged) against the same "
        "route out of one, both this venv's Routeway in place of the yardstick (ratio: plain/rollout)",
    )
    parser.add_argument(
        "--lean-yardstick",
        action="store_true",
        help="calibration: the yardstick sends with Routeway's UpstreamClient (what the features cost)",
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = OUT / f"logs-paired-{stamp}"
    logs.mkdir()
    report: dict[str, Any] = {
        "command": "bench/paired.py",
        "args": vars(args),
        "commit": git_state(),
        "points": [],
    }
    up = free_port()
    with contextlib.ExitStack() as stack:
        pin_load = ["taskset", "-c", LOAD_CPU]
        pin_proxy = ["taskset", "-c", PROXY_CPU]
        stack.enter_context(
            started(
                "upstream",
                # as run.py: a stream's first event at once, the rest 2 ms later
                [
                    *pin_load,
                    PYTHON,
                    str(BENCH / "fast_upstream.py"),
                    "--port",
                    str(up),
                    "--stream-gap",
                    "0.002",
                ],
                logs,
            )
        )
        targets: dict[str, tuple[int, str]] = {}
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="routeway-paired-")))
        (folder / "bench.yaml").write_text(MANIFESTS.format(port=up))
        measured = folder
        if args.cache != "off" or args.limits:  # only the measured side's route has them
            measured = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="routeway-measured-")))
            route = MANIFESTS.format(port=up) + (CACHE_SPEC if args.cache != "off" else "")
            route += LIMITS_SPEC + CLIENTS_MANIFESTS if args.limits else ""
            (measured / "bench.yaml").write_text(route)
        port = free_port()
        if args.rollout:
            command = [*pin_proxy, *routeway_serve(folder, port, args.workers)]
        elif args.against:
            command = [*pin_proxy, *routeway_serve(folder, port, args.workers, args.against)]
        else:
            command = [*pin_proxy, PYTHON, str(BENCH / "yardstick_proxy.py"), "--port", str(port)]
            command += ["--upstream", f"http://127.0.0.1:{up}", "--workers", str(args.workers)]
            command += ["--lean"] if args.lean_yardstick else []
        process = stack.enter_context(started("yardstick", command, logs))
        wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, body=PLAIN_BODY)
        targets["yardstick"] = (process.pid, f"http://127.0.0.1:{port}")
        port = free_port()
        admin = free_port()
        if args.rollout:
            measured = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="routeway-rollout-")))
            (measured / "bench.yaml").write_text(ROLLOUT_MANIFESTS.format(port=up, backend="fast-upstream"))
        command = [*pin_proxy, *routeway_serve(measured, port, args.workers, args.python, admin)]
        process = stack.enter_context(started("routeway", command, logs))
        key = "sk-bench" if args.limits else None  # post.lua's key: team-0's
        wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, body=PLAIN_BODY, key=key)
        if args.rollout:
            start_rollout(measured, up, admin)
        targets["routeway"] = (process.pid, f"http://127.0.0.1:{port}")
        time.sleep(1.0)
        print(
            f"paired CPU per {'stream' if args.stream else 'request'}, {args.rounds} rounds of "
            f"{args.duration:g} s, workers {args.workers}",
            flush=True,
        )
        for connections in (int(c) for c in args.connections.split(",")):
            script = "stream.lua" if args.stream else "post.lua"
            if args.cache == "miss" and not args.stream:
                script = "post_unique.lua"
            report["points"].append(measure(targets, connections, args.rounds, args.duration, script))
    path = OUT / f"paired-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"JSON: {path}; server logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
