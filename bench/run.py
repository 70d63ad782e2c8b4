"""One command, side by side on loopback: direct upstream, the yardstick proxy, Routeway.

    .venv/bin/python bench/run.py [--duration 10] [--workers 2] [--connections 1,16,64]

Starts a fast upstream (bench/fast_upstream.py), the minimal aiohttp proxy
(bench/yardstick_proxy.py), optionally nginx as a peer (`--targets ...,nginx`; Debian package
`nginx-light`, same worker count, upstream keep-alive, no buffering), optionally the LiteLLM
proxy (`--litellm /path/to/venv/bin/litellm`, installed in its own venv with
`pip install 'litellm[proxy]'`, offline cost map, no telemetry) and `routeway serve` with generated manifests pointing one
ModelRoute at that upstream (provider openai), then for each target:
- `wrk` non-streaming POST /v1/chat/completions at each connection count (bench/post.lua),
  after a short warm-up: throughput, p50/p99 latency, errors;
- CPU time per request of the proxy's process tree (utime+stime from /proc before/after);
- a streaming client (aiohttp): sequential and concurrent streamed requests, time to first
  byte of the body and time to the end of the stream. The upstream sends a stream's first
  event at once and the rest `--stream-gap` seconds later (default 2 ms), so time to first
  byte measures relaying one event, as with a real model, not the whole stream.
Writes bench/out/bench-<time>.json and prints a markdown report with the ratios. Every
process it starts is in its own session and is stopped at the end; every step is bounded.
Nothing leaves 127.0.0.1. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PYTHON = sys.executable
ROUTEWAY = str(Path(sys.executable).parent / "routeway")  # the console script of this venv
CLK_TCK = os.sysconf("SC_CLK_TCK")
PLAIN_BODY = (
    b'{"model":"bench","messages":[{"role":"user","content":"Say something short."}],"max_tokens":16}'
)
STREAM_BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say something short."}],
    "max_tokens": 16,
    "stream": True,
}

MANIFESTS = """\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: fast-upstream, namespace: default}}
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
    - name: fast-upstream
"""

CACHE_SPEC = "  cache: {ttl: 10m, maxBytes: 64Mi, scope: Route}\n"
"""Appended to MANIFESTS' route (`--cache`): the bench route with a response cache."""

LIMITS_SPEC = "  limits: {requestsPerMinute: 1000000000, tokensPerMinute: 1000000000}\n"
"""Appended to MANIFESTS' route (`paired.py --limits`): route limits far above any load, so
every request reserves and settles and none is refused."""

CLIENTS_MANIFESTS = """\
---
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {name: default, namespace: default}
spec:
  auth: {apiKeySecretRef: {name: gateway-keys}}
---
apiVersion: v1
kind: Secret
metadata: {name: gateway-keys, namespace: default}
stringData: {admin: sk-bench-admin}
""" + "".join(
    f"""\
---
apiVersion: routeway.dev/v1alpha1
kind: ModelClient
metadata: {{name: team-{n}, namespace: default}}
spec:
  keySecretRef: {{name: team-{n}-key, key: api-key}}
  models: [bench, "other-*"]
  limits: {{requestsPerMinute: 1000000000, tokensPerMinute: 1000000000, tokensPerDay: 1000000000000}}
---
apiVersion: v1
kind: Secret
metadata: {{name: team-{n}-key, namespace: default}}
stringData: {{api-key: {"sk-bench" if n == 0 else f"sk-bench-{n}"}}}
"""
    for n in range(20)
)
"""Appended to MANIFESTS (`paired.py --limits`): a gateway that requires keys and 20
ModelClients with every limit (far above any load); the load's key, `sk-bench`
(post.lua's), is team-0's, so each request is authenticated as a client, checked against its
model list, and reserves and settles three client budgets besides the route's two."""


NGINX_CONF = """\
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream model {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


LITELLM_CONF = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
general_settings:
  dangerously_permit_weak_or_unset_master_key: true  # loopback-only benchmark
"""


@dataclass
class Target:
    name: str
    url: str  # base URL, no trailing slash
    root_pid: int | None  # the process tree whose CPU is charged (None: nothing in between)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc (workers forked or spawned alike)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int | None) -> float:
    """utime+stime of a process tree (live processes; workers that exited are not counted)."""
    if root is None:
        return 0.0
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


@contextlib.contextmanager
def started(name: str, command: list[str], logs: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own session; stop the whole group on exit, SIGKILL if it lingers."""
    log = (logs / f"{name}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()


def wait_http(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 30.0,
    body: bytes | None = None,
    key: str | None = None,
) -> None:
    """Poll until `url` answers 200 (POSTing `body` when given, with `key` as the bearer
    token when given): up, routed, upstream reached."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before answering {url}")
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
                last = response.status
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s (last: {last})")


def run_wrk(url: str, connections: int, seconds: float, script: str = "post.lua") -> dict[str, Any]:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency",
        "-s", str(BENCH / script), url + "/v1/chat/completions",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCHJSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["error_total"] = sum(result["errors"].values())
    return result


def measure_point(target: Target, connections: int, seconds: float, upstream_pid: int) -> dict[str, Any]:
    """One wrk run after a short warm-up, with the CPU both process trees spent on it."""
    run_wrk(target.url, connections, min(1.0, seconds))  # warm-up: pools filled, code paths hot
    load_before = load_average()
    cpu_before, upstream_before = cpu_seconds(target.root_pid), cpu_seconds(upstream_pid)
    result = run_wrk(target.url, connections, seconds)
    cpu_after, upstream_after = cpu_seconds(target.root_pid), cpu_seconds(upstream_pid)
    requests = max(result["requests"], 1)
    result["proxy_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / requests
    result["upstream_cpu_ms_per_request"] = (upstream_after - upstream_before) * 1000 / requests
    result["load_average_before"] = load_before
    print(
        f"  {target.name:10} c={connections:<3} {result['rps']:9.0f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
        f"p99 {result['p99_us'] / 1000:6.2f} ms  cpu {result['proxy_cpu_ms_per_request']:.3f} ms/req  "
        f"errors {result['error_total']}  load {load_before:.2f}",
        flush=True,
    )
    return result


def median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric metric's median over the rounds (the rounds are kept alongside)."""
    merged: dict[str, Any] = {"rounds": rounds}
    for key, value in rounds[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in rounds)
    if "errors" in rounds[0]:
        merged["error_total"] = sum(r["error_total"] for r in rounds)
    return merged


async def stream_once(session: aiohttp.ClientSession, url: str) -> tuple[float, float, int]:
    """(time to first body byte, time to end of stream, bytes) of one streamed request."""
    start = time.perf_counter()
    async with session.post(url, json=STREAM_BODY) as response:
        first = await response.content.readany()
        ttfb = time.perf_counter() - start
        size, tail = len(first), first[-32:]
        async for chunk in response.content.iter_any():
            size += len(chunk)
            tail = (tail + chunk)[-32:]
        if response.status != 200 or b"[DONE]" not in tail:
            raise RuntimeError(f"stream failed: status {response.status}, ends with {tail!r}")
    return ttfb, time.perf_counter() - start, size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def measure_streams(target: Target, sequential: int, concurrency: int, per_task: int) -> dict[str, Any]:
    url = target.url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(20):  # warm-up
            await stream_once(session, url)
        cpu_before = cpu_seconds(target.root_pid)
        seq = [await stream_once(session, url) for _ in range(sequential)]

        async def worker() -> list[tuple[float, float, int]]:
            return [await stream_once(session, url) for _ in range(per_task)]

        started_at = time.perf_counter()
        batches = await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started_at
        cpu_after = cpu_seconds(target.root_pid)
    conc = [item for batch in batches for item in batch]
    total = len(seq) + len(conc)
    s = {
        "sequential": sequential,
        "concurrency": concurrency,
        "concurrent_requests": len(conc),
        "seq_ttfb_p50_ms": statistics.median(t for t, _, _ in seq) * 1000,
        "seq_ttfb_p99_ms": percentile([t for t, _, _ in seq], 99) * 1000,
        "seq_total_p50_ms": statistics.median(t for _, t, _ in seq) * 1000,
        "conc_ttfb_p50_ms": statistics.median(t for t, _, _ in conc) * 1000,
        "conc_ttfb_p99_ms": percentile([t for t, _, _ in conc], 99) * 1000,
        "conc_streams_per_s": len(conc) / elapsed,
        "proxy_cpu_ms_per_stream": (cpu_after - cpu_before) * 1000 / total,
        "bytes_per_stream": statistics.median(b for _, _, b in seq),
    }
    print(
        f"  {target.name:10} stream: ttfb p50 {s['seq_ttfb_p50_ms']:.2f} ms (sequential), "
        f"{s['conc_ttfb_p50_ms']:.2f}/{s['conc_ttfb_p99_ms']:.2f} ms p50/p99 at {concurrency} concurrent, "
        f"{s['conc_streams_per_s']:.0f} streams/s, cpu {s['proxy_cpu_ms_per_stream']:.3f} ms/stream",
        flush=True,
    )
    return s


def routeway_available() -> bool:
    done = subprocess.run([ROUTEWAY, "serve", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return done.returncode == 0 and "--workers" in done.stdout


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    versions = {}
    for package in ("aiohttp", "uvloop", "orjson"):
        with contextlib.suppress(Exception):
            versions[package] = __import__("importlib.metadata").metadata.version(package)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": wrk[0] if wrk else "",
        "load_average_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def git_state() -> str:
    """The commit measured, and whether the proxy code differed from it (other sessions edit)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "proxy", "routeway"], capture_output=True, text=True, cwd=ROOT
    )
    return head.stdout.strip() + (
        " + uncommitted changes in proxy/ or routeway/" if dirty.stdout.strip() else ""
    )


def render_markdown(report: dict[str, Any]) -> str:
    targets: dict[str, dict[str, Any]] = report["targets"]
    conns = [f"c{c}" for c in report["settings"]["connections"]]
    lines = [
        f"Run {report['started']} UTC at {report['commit']}, {report['settings']['duration_s']} s per point, "
        f"median of {report['settings']['rounds']} interleaved rounds, "
        f"proxy workers {report['settings']['workers']}, upstream workers {report['settings']['upstream_workers']}.",
        "",
        "| target | conns | req/s | p50 ms | p99 ms | proxy CPU ms/req | errors | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in targets.items():
        for key in conns:
            r = results.get(key)
            if r is None:
                lines.append(f"| {name} | {key[1:]} | pending | | | | | |")
                continue
            lines.append(
                f"| {name} | {key[1:]} | {r['rps']:.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
                f"{r['proxy_cpu_ms_per_request']:.3f} | {r['error_total']} | {r['load_average_before']:.2f} |"
            )
    lines += [
        "",
        "| target | TTFB p50 ms (sequential) | TTFB p99 ms (seq) | TTFB p50 / p99 ms (concurrent) "
        "| streams/s (concurrent) | proxy CPU ms/stream |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, results in targets.items():
        s = results.get("stream")
        if s is None:
            lines.append(f"| {name} | pending | | | | |")
            continue
        lines.append(
            f"| {name} | {s['seq_ttfb_p50_ms']:.2f} | {s['seq_ttfb_p99_ms']:.2f} | "
            f"{s['conc_ttfb_p50_ms']:.2f} / {s['conc_ttfb_p99_ms']:.2f} | {s['conc_streams_per_s']:.0f} | "
            f"{s['proxy_cpu_ms_per_stream']:.3f} |"
        )
    lines += [
        "",
        "| ratio | " + " | ".join(f"{c[1:]} conns" for c in conns) + " |",
        "|---|" + "---:|" * len(conns),
    ]
    for label, row in report["ratios"].items():
        lines.append(f"| {label} | " + " | ".join(_fmt(row.get(c)) for c in conns) + " |")
    for label, value in report.get("stream_ratios", {}).items():
        lines.append(f"| {label} | {_fmt(value)} |" + " |" * (len(conns) - 1))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def compute_ratios(report: dict[str, Any]) -> None:
    t = report["targets"]
    ratios: dict[str, dict[str, float]] = {
        "yardstick / direct (req/s)": {},
        "routeway / yardstick (req/s), target >= 0.9": {},
        "yardstick / routeway (CPU per req), target >= 0.9": {},
        "routeway - yardstick p50 ms, target <= 0.2 at 1 conn": {},
    }
    for key in (f"c{c}" for c in report["settings"]["connections"]):
        direct, yard, rw = (t.get(n, {}).get(key) for n in ("direct", "yardstick", "routeway"))
        if direct and yard:
            ratios["yardstick / direct (req/s)"][key] = yard["rps"] / direct["rps"]
        if yard and rw:
            ratios["routeway / yardstick (req/s), target >= 0.9"][key] = rw["rps"] / yard["rps"]
            ratios["yardstick / routeway (CPU per req), target >= 0.9"][key] = yard[
                "proxy_cpu_ms_per_request"
            ] / max(rw["proxy_cpu_ms_per_request"], 1e-9)
            ratios["routeway - yardstick p50 ms, target <= 0.2 at 1 conn"][key] = (
                rw["p50_us"] - yard["p50_us"]
            ) / 1000
    report["ratios"] = ratios
    yard_s, rw_s = t.get("yardstick", {}).get("stream"), t.get("routeway", {}).get("stream")
    if yard_s and rw_s:
        report["stream_ratios"] = {
            "stream TTFB p50 routeway - yardstick ms (sequential), target <= 0.2": rw_s["seq_ttfb_p50_ms"]
            - yard_s["seq_ttfb_p50_ms"],
            "streams/s routeway / yardstick (concurrent)": rw_s["conc_streams_per_s"]
            / yard_s["conc_streams_per_s"],
        }


def start_targets(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    logs: Path,
    up_port: int,
    manifests: str,
    report: dict[str, Any],
) -> list[Target]:
    """Start every proxy up front (idle ones cost nothing) so rounds can interleave them."""
    wanted = args.targets.split(",")
    targets: list[Target] = []
    if "direct" in wanted:
        targets.append(Target("direct", f"http://127.0.0.1:{up_port}", None))
    if "yardstick" in wanted:
        port = free_port()
        command = [PYTHON, str(BENCH / "yardstick_proxy.py"), "--port", str(port)]
        command += ["--upstream", f"http://127.0.0.1:{up_port}", "--workers", str(args.workers)]
        process = stack.enter_context(started("yardstick", command, logs))
        wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, body=PLAIN_BODY)
        targets.append(Target("yardstick", f"http://127.0.0.1:{port}", process.pid))
    if "nginx" in wanted:
        if shutil.which("nginx") is None:
            report["notes"].append("nginx not installed: its rows are missing")
        else:
            port = free_port()
            root = Path(manifests, "nginx")
            root.mkdir()
            conf = root / "nginx.conf"
            conf.write_text(NGINX_CONF.format(workers=args.workers, root=root, upstream=up_port, port=port))
            command = ["nginx", "-c", str(conf), "-p", str(root), "-g", "daemon off;"]
            process = stack.enter_context(started("nginx", command, logs))
            wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, body=PLAIN_BODY)
            targets.append(Target("nginx", f"http://127.0.0.1:{port}", process.pid))
    if args.litellm:
        port = free_port()
        conf = Path(manifests, "litellm.yaml")
        conf.write_text(LITELLM_CONF.format(upstream=up_port))
        command = ["env", "LITELLM_LOCAL_MODEL_COST_MAP=True", "LITELLM_LOG=ERROR", args.litellm]
        command += [
            "--config",
            str(conf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(args.workers),
        ]
        process = stack.enter_context(started("litellm", command, logs, cwd=Path(manifests)))
        try:  # it takes a minute or more to start on this machine
            wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, timeout=300, body=PLAIN_BODY)
            targets.append(Target("litellm", f"http://127.0.0.1:{port}", process.pid))
        except RuntimeError as exc:
            report["notes"].append(f"litellm did not start: {exc}")
    if "routeway" in wanted:
        if not routeway_available():
            print("routeway serve --workers is not available yet: its rows are pending", flush=True)
            report["notes"].append("routeway serve was not available: Routeway rows pending")
            return targets
        port, admin = free_port(), free_port()
        folder = Path(manifests, "routeway")  # its own folder: serve reads every YAML file in it
        folder.mkdir()
        route_cache = CACHE_SPEC if args.cache else ""
        (folder / "bench.yaml").write_text(MANIFESTS.format(port=up_port) + route_cache)
        command = [ROUTEWAY, "serve", "-f", str(folder), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--admin-port", str(admin), "--workers", str(args.workers)]
        process = stack.enter_context(started("routeway", command, logs))
        try:
            wait_http(f"http://127.0.0.1:{admin}/readyz", process)
            wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", process, body=PLAIN_BODY)
        except RuntimeError as exc:
            print(f"routeway did not start: {exc} (see {logs}/routeway.log)", flush=True)
            report["notes"].append(f"routeway did not start: {exc}")
            return targets
        targets.append(Target("routeway", f"http://127.0.0.1:{port}", process.pid))
    time.sleep(1.0)  # every worker bound and idle
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk load per point")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="proxy worker processes")
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--targets", default="direct,yardstick,routeway", help="also: nginx (if installed)")
    parser.add_argument(
        "--litellm", help="path to a `litellm` executable in its own venv: adds the LiteLLM proxy"
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="the bench route gets a response cache: every request after the first is a hit",
    )
    parser.add_argument("--stream-sequential", type=int, default=200)
    parser.add_argument("--stream-concurrency", type=int, default=16)
    parser.add_argument("--stream-per-task", type=int, default=25)
    parser.add_argument(
        "--stream-gap",
        type=float,
        default=0.002,
        help="upstream pause between a stream's first event and the rest (so TTFB is one event's relay)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = OUT / f"logs-{stamp}"
    logs.mkdir()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": machine(),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "workers": args.workers,
            "upstream_workers": args.upstream_workers,
            "connections": connections,
            "stream_gap_s": args.stream_gap,
        },
        "commit": git_state(),
        "notes": [],
        "targets": {},
    }
    up_port = free_port()
    upstream_cmd = [PYTHON, str(BENCH / "fast_upstream.py"), "--port", str(up_port)]
    upstream_cmd += ["--workers", str(args.upstream_workers), "--stream-gap", str(args.stream_gap)]
    with contextlib.ExitStack() as stack:
        manifests = stack.enter_context(tempfile.TemporaryDirectory())
        upstream = stack.enter_context(started("upstream", upstream_cmd, logs))
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        targets = start_targets(stack, args, logs, up_port, manifests, report)
        points: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_index in range(args.rounds if targets else 0):
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
            order = targets[round_index % len(targets) :] + targets[: round_index % len(targets)]
            for count in connections:
                for target in order:
                    point = measure_point(target, count, args.duration, upstream.pid)
                    points.setdefault((target.name, f"c{count}"), []).append(point)
            for target in order:
                streams = asyncio.run(
                    measure_streams(
                        target, args.stream_sequential, args.stream_concurrency, args.stream_per_task
                    )
                )
                points.setdefault((target.name, "stream"), []).append(streams)
    for (name, key), rounds in points.items():
        report["targets"].setdefault(name, {})[key] = median_of_rounds(rounds)
    if "routeway" in args.targets.split(","):
        report["targets"].setdefault("routeway", {})
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    report["machine"]["load_average_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    compute_ratios(report)
    path = OUT / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print()
    print(render_markdown(report))
    print(f"\nJSON: {path.relative_to(ROOT)}; server logs: {logs.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
