"""Python work per request, counted rather than timed: a measure a busy machine cannot skew.

    .venv/bin/python bench/callcount.py [--seconds 6] [--stream]

Why: on this shared 2-core machine wall-clock and even CPU-time numbers move with the other
sessions' load; the number of Python-level calls a proxy makes per request does not. Runs the
yardstick and Routeway (one worker each) under `python -m cProfile`, twice: idle (startup
only) and under wrk load; the difference divided by the requests served is the per-request
work. Prints calls per request by package, and the functions only Routeway runs (with
cProfile's own inflated time, useful to rank them, not as real durations).
"""

from __future__ import annotations

import argparse
import collections
import json
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

from run import BENCH, MANIFESTS, OUT, PLAIN_BODY, PYTHON, ROUTEWAY, free_port, run_wrk, started, wait_http

Key = tuple[str, int, str]
CONNECTIONS = [8]  # wrk connections; set from --connections
SKIP = ("serve_process", "run_until_complete", "run", "_run_once", "select", "poll")


def profiled(
    name: str, command: list[str], url: str, seconds: float, logs: Path, script: str = "post.lua"
) -> tuple[dict[Key, tuple[int, float]], int]:
    """Function stats of one run of `command`, and how many requests wrk completed (0: idle)."""
    stats_file = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".cprof", dir=OUT)[1])
    requests = 0
    with started(name, [PYTHON, "-m", "cProfile", "-o", str(stats_file), *command], logs) as process:
        wait_http(url + "/v1/chat/completions", process, body=PLAIN_BODY, timeout=60)
        if seconds:
            requests = run_wrk(url, CONNECTIONS[0], seconds, script)["requests"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    raw = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]  # undocumented but stable
    stats_file.unlink()
    return {key: (value[1], value[2]) for key, value in raw.items()}, requests + 1  # +1: readiness probe


def per_request(
    name: str, command: list[str], url: str, seconds: float, logs: Path, script: str
) -> dict[Key, tuple[float, float]]:
    idle, idle_requests = profiled(name, command, url, 0, logs)
    loaded, requests = profiled(name, command, url, seconds, logs, script)
    served = requests - idle_requests
    print(f"{name}: {served} requests counted", flush=True)
    result = {}
    for key, (calls, own) in loaded.items():
        base_calls, base_own = idle.get(key, (0, 0.0))
        if calls > base_calls and not key[2].startswith(SKIP):
            result[key] = ((calls - base_calls) / served, (own - base_own) / served * 1e6)
    return result


def package(filename: str) -> str:
    for marker in (
        "/proxy/",
        "/routeway/",
        "aiohttp",
        "prometheus_client",
        "multidict",
        "yarl",
        "asyncio",
        "bench",
    ):
        if marker in filename:
            return marker.strip("/")
    return "builtins (C)" if filename == "~" else "other"


def label(key: Key) -> str:
    return f"{key[2]} ({key[0].split('site-packages/')[-1].replace(str(BENCH.parent) + '/', '')}:{key[1]})"


def main() -> int:
    parser = argparse.ArgumentParser(description="Python calls per request: yardstick vs Routeway")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--stream", action="store_true", help="streamed requests (bench/stream.lua)")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    CONNECTIONS[0] = args.connections
    script = "stream.lua" if args.stream else "post.lua"
    OUT.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="callcount-logs-", dir=OUT))
    up_port, yard_port, rw_port, admin_port = free_port(), free_port(), free_port(), free_port()
    with (
        started("upstream", [PYTHON, str(BENCH / "fast_upstream.py"), "--port", str(up_port)], logs) as up,
        tempfile.TemporaryDirectory() as manifests,
    ):
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", up)
        yard_cmd = [str(BENCH / "yardstick_proxy.py"), "--port", str(yard_port), "--workers", "1"]
        yard_cmd += ["--upstream", f"http://127.0.0.1:{up_port}"]
        yard = per_request("yardstick", yard_cmd, f"http://127.0.0.1:{yard_port}", args.seconds, logs, script)
        Path(manifests, "bench.yaml").write_text(MANIFESTS.format(port=up_port))
        rw_cmd = [ROUTEWAY, "serve", "-f", manifests, "--port", str(rw_port), "--admin-port", str(admin_port)]
        rw_cmd += ["--workers", "1", "--log-level", "warning"]
        rw = per_request("routeway", rw_cmd, f"http://127.0.0.1:{rw_port}", args.seconds, logs, script)

    def by_package(stats: dict[Key, tuple[float, float]]) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for key, (calls, _) in stats.items():
            counts[package(key[0])] += calls
        return counts

    rw_pkg, yard_pkg = by_package(rw), by_package(yard)
    print(
        f"\ncalls per request: routeway {sum(rw_pkg.values()):.0f}, yardstick {sum(yard_pkg.values()):.0f}\n"
    )
    print("| package | routeway calls/req | yardstick calls/req |\n|---|---:|---:|")
    for name in sorted(set(rw_pkg) | set(yard_pkg), key=lambda n: -rw_pkg[n]):
        print(f"| {name} | {rw_pkg[name]:.1f} | {yard_pkg[name]:.1f} |")
    only = {k: v for k, v in rw.items() if k not in yard}
    print(
        f"\nfunctions only Routeway runs: {sum(c for c, _ in only.values()):.0f} calls/req; "
        "top by cProfile own time (inflated by the profiler; use to rank):\n"
    )
    print("| calls/req | profiled us/req | function |\n|---:|---:|---|")
    for key, (calls, own) in sorted(only.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"| {calls:.1f} | {own:.1f} | {label(key)} |")
    path = OUT / f"callcount-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(
        json.dumps(
            {
                "routeway": {label(k): v for k, v in rw.items()},
                "yardstick": {label(k): v for k, v in yard.items()},
            },
            indent=1,
        )
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
