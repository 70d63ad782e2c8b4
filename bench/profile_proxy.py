"""Where a proxy's time goes per request: py-spy samples of one worker under wrk load.

    PY_SPY=/tmp/profvenv/bin/py-spy .venv/bin/python bench/profile_proxy.py [--connections 16]
    PY_SPY=... .venv/bin/python bench/profile_proxy.py --cache-miss   # cached route vs the same uncached

py-spy is not a project dependency: install it in a throwaway venv
(`python3 -m venv /tmp/profvenv && /tmp/profvenv/bin/pip install py-spy`) and point PY_SPY at it.
Runs the fast upstream, then the yardstick and Routeway one after the other with one worker
each by default (`--workers N` samples every worker process), loads each with wrk, samples it at 200 Hz, and
prints microseconds per request by function: self time for the functions where Routeway
spends more than the yardstick, and inclusive time of Routeway's own frames. Samples are wall
time of a busy process, so on a shared machine they include time spent descheduled: compare
the two columns, not the absolute numbers. Raw stacks go to bench/out/profile-*.raw.

`--limits`: likewise Routeway against itself, the open plain route against a gateway requiring
keys with ModelClients and client and route limits (`paired.py --limits`'s manifests).

`--cache-miss`: the comparison is Routeway against itself — the bench route without a cache
(in the yardstick's column) and with one — both loaded with `post_unique.lua` (a new prompt
per request, so every request on the cached route misses and stores): the excess is what a
miss costs, function by function.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    BENCH,
    CACHE_SPEC,
    CLIENTS_MANIFESTS,
    LIMITS_SPEC,
    MANIFESTS,
    OUT,
    PLAIN_BODY,
    PYTHON,
    ROOT,
    ROUTEWAY,
    free_port,
    run_wrk,
    started,
    wait_http,
)

RATE = 200
FRAME = re.compile(r"(.*) \((?:.*?site-packages/)?(?:/work/main/)?(.*?):\d+\)$")


def profile(
    name: str, command: list[str], url: str, args: argparse.Namespace, logs: Path, script: str = "post.lua"
) -> tuple[Path, int]:
    """Run `command`, load it for warm-up + sampling, return the raw stacks and requests sampled."""
    raw = OUT / f"profile-{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.raw"
    with started(name, command, logs) as process:
        wait_http(url + "/v1/chat/completions", process, body=PLAIN_BODY, key="sk-bench")
        run_wrk(url, args.connections, 2)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 4}s", "--latency",
             "-s", str(BENCH / script), url + "/v1/chat/completions"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2)
        subprocess.run(
            [args.py_spy, "record", "-p", str(process.pid), "-d", str(args.seconds), "-r", str(RATE),
             "-f", "raw", "-o", str(raw), "--nonblocking", "--subprocesses"],
            check=True, capture_output=True, timeout=args.seconds + 60,
        )  # fmt: skip
        out, _ = load.communicate(timeout=args.seconds + 60)
    line = next(x for x in out.splitlines() if x.startswith("BENCHJSON "))
    summary = json.loads(line.removeprefix("BENCHJSON "))
    rps = summary["requests"] / (summary["duration_us"] / 1e6)
    print(f"{name}: {rps:.0f} req/s under wrk -c{args.connections}", flush=True)
    return raw, int(rps * args.seconds)


def per_request(raw: Path, requests: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(inclusive, self, total) microseconds per request by `function (file)`."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        keys = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            keys.append(f"{match.group(1)} ({match.group(2)})" if match else "<process>")
        own[keys[-1]] += n
        for key in set(keys):
            inclusive[key] += n
    scale = 1e6 / RATE / max(requests, 1)
    return (
        {k: v * scale for k, v in inclusive.items()},
        {k: v * scale for k, v in own.items()},
        total * scale,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="per-request profile of the yardstick and Routeway")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--py-spy", default=os.environ.get("PY_SPY", "py-spy"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each proxy (all sampled)")
    parser.add_argument(
        "--cache-miss", action="store_true", help="the bench route uncached vs cached, every request a miss"
    )
    parser.add_argument(
        "--limits", action="store_true", help="the open plain route vs keys, ModelClients and limits"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="profile-logs-", dir=OUT))
    up_port, yard_port, rw_port, admin_port = free_port(), free_port(), free_port(), free_port()
    upstream = [PYTHON, str(BENCH / "fast_upstream.py"), "--port", str(up_port)]
    with started("upstream", upstream, logs) as up, tempfile.TemporaryDirectory() as manifests:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", up)
        script = "post_unique.lua" if args.cache_miss else "post.lua"
        if args.cache_miss or args.limits:  # the "yardstick" is Routeway with the plain route
            Path(manifests, "bench.yaml").write_text(MANIFESTS.format(port=up_port))
            yard_cmd = [ROUTEWAY, "serve", "-f", manifests, "--port", str(yard_port)]
            yard_cmd += [
                "--admin-port",
                str(free_port()),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ]
        else:
            yard_cmd = [PYTHON, str(BENCH / "yardstick_proxy.py"), "--port", str(yard_port)]
            yard_cmd += ["--workers", str(args.workers), "--upstream", f"http://127.0.0.1:{up_port}"]
        yard = profile("yardstick", yard_cmd, f"http://127.0.0.1:{yard_port}", args, logs, script)
        extra = CACHE_SPEC if args.cache_miss else ""
        extra += LIMITS_SPEC + CLIENTS_MANIFESTS if args.limits else ""
        Path(manifests, "bench.yaml").write_text(MANIFESTS.format(port=up_port) + extra)
        rw_cmd = [ROUTEWAY, "serve", "-f", manifests, "--port", str(rw_port), "--admin-port", str(admin_port)]
        rw_cmd += ["--workers", str(args.workers), "--log-level", "warning"]
        rw = profile("routeway", rw_cmd, f"http://127.0.0.1:{rw_port}", args, logs, script)
    y_self, y_total = per_request(*yard)[1:]
    r_incl, r_self, r_total = per_request(*rw)
    print(f"\nsampled time per request: routeway {r_total:.0f} us, yardstick {y_total:.0f} us")
    print("\n| self us/req routeway | yardstick | function (largest excess first) |\n|---:|---:|---|")
    for key in sorted(set(r_self) | set(y_self), key=lambda k: y_self.get(k, 0) - r_self.get(k, 0))[
        : args.top
    ]:
        print(f"| {r_self.get(key, 0):.1f} | {y_self.get(key, 0):.1f} | {key} |")
    print("\n| inclusive us/req | Routeway frame |\n|---:|---|")
    own = sorted(((v, k) for k, v in r_incl.items() if "proxy/" in k or "routeway/" in k), reverse=True)
    for value, key in own[: args.top]:
        if value >= 1.0:
            print(f"| {value:.1f} | {key} |")
    print(f"\nraw stacks: {yard[0].relative_to(ROOT)}, {rw[0].relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
