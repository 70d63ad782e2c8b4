"""Soak: a steady mixed load against `routeway serve --workers 2`, with each worker's RSS and
open file descriptors sampled from /proc, and a verdict on whether they still grow.

    .venv/bin/python bench/soak.py [--duration 600] [--warmup 120] [--interval 15] [--concurrency 8]

What runs (all on 127.0.0.1, in one temporary directory, stopped at the end):
- an upstream (this file with `--upstream`, its own process): JSON answers, SSE streams of 20
  events 10 ms apart, and on a second path errors in turn (503 with a JSON body, 500 with a
  plain-text body, a connection reset before any byte); it checks the planted upstream key;
- `routeway serve` with two workers: a gateway with `auth`, a limited ModelClient, a route to
  the good upstream, a route whose backends fail (with a fallback to the good one half the
  time), a route with `limits` small enough to answer 429s, and a route with `cache`;
- `--concurrency` loops, each sending the kinds in turn: `json`, `stream`, `abort` (a stream
  the client drops after its first event), `error`, `fallback`, `unauthorized` (401),
  `limited` (429s and 200s), `cached` (hits after the first), `bad_body` (400).

Every `--interval` seconds it reads VmRSS and the number of entries of /proc/PID/fd of the
supervisor and each worker. A worker that changes pid (it crashed or was replaced) fails the
run. The verdict looks only at samples after `--warmup`: the least-squares slope of RSS (MiB per
hour) and of fds, and the growth it projects over the post-warm-up window; RSS is flat when
that projection is under `--rss-tolerance` MiB; fds are flat when the highest sample of the
second half of that window is not above the highest of the first half plus `--fd-tolerance`
(single samples move with the connections in flight). Flat memory proves nothing if the
requests failed, so the run also fails when more than `--max-failure-rate` of the requests of
kinds with a known answer got another one (`EXPECTED`: 200 for `json`, `stream`, `fallback`,
`cached`; 200 or 429 for `limited`; 401, 400 for `unauthorized`, `bad_body`; `error` answers
5xx by design and is not counted). Exit 0 when flat and answered, 1 when not.
The output is what docs/reliability.md "## Soak" records. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

UPSTREAM_KEY = "sk-upstream-SOAK-4b1d"
CLIENT_KEY = "sk-client-SOAK-77e0"
GATEWAY_KEY = "sk-gateway-SOAK-0a9c"
KINDS = ("json", "stream", "abort", "error", "fallback", "unauthorized", "limited", "cached", "bad_body")
# The outcomes (Load.one's strings) each kind must get; any other counts as a failure.
EXPECTED: dict[str, frozenset[str]] = {
    "json": frozenset({"200"}),
    "stream": frozenset({"200"}),
    "abort": frozenset({"200-aborted"}),
    "fallback": frozenset({"200"}),
    "unauthorized": frozenset({"401"}),
    "limited": frozenset({"200", "429"}),
    "cached": frozenset({"200-hit", "200-miss"}),
    "bad_body": frozenset({"400"}),
}


# --- the upstream (its own process) ----------------------------------------------------------


def _completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "soak",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    )


async def _good(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
        return web.json_response({"error": {"message": "bad key", "type": "auth", "code": None}}, status=401)
    body = await request.json()
    model = body.get("model", "m")
    if not body.get("stream"):
        return web.Response(body=_completion(model), content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        for i in range(20):
            delta = {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}
            event = {"id": "soak", "object": "chat.completion.chunk", "model": model, "choices": [delta]}
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            await asyncio.sleep(0.01)
        usage = {"id": "soak", "object": "chat.completion.chunk", "model": model, "choices": []}
        usage["usage"] = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
        await response.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the gateway dropped the stream because its client left (the `abort` kind)
    return response


_failures = itertools.cycle(("503", "500-text", "reset"))


async def _bad(request: web.Request) -> web.StreamResponse:
    await request.read()
    failure = next(_failures)
    if failure == "503":
        error = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
        return web.json_response(error, status=503)
    if failure == "500-text":
        return web.Response(status=500, text="internal error, not JSON")
    assert request.transport is not None
    request.transport.abort()  # a reset before any byte of the answer
    raise web.HTTPInternalServerError  # never sent: the connection is gone


def run_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_post("/good/v1/chat/completions", _good)
    app.router.add_post("/bad/v1/chat/completions", _bad)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# --- the gateway's files ---------------------------------------------------------------------


def manifests(upstream: str) -> str:
    def route(name: str, backends: str, extra: str = "") -> str:
        return (
            "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  model: {name}\n  backends: [{backends}]\n{extra}"
        )

    def backend(name: str, path: str) -> str:
        return (
            "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  provider: openai\n  url: {upstream}/{path}/v1\n  model: m\n"
            "  apiKeySecretRef: {name: upstream-key, key: api-key}\n"
        )

    return "\n".join(
        [
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelGateway\n"
            "metadata: {name: default, namespace: default}\n"
            "spec:\n  auth: {apiKeySecretRef: {name: gateway-keys}}\n",
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: gateway-keys, namespace: default}\n"
            f"stringData: {{ops: {GATEWAY_KEY}}}\n",
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: upstream-key, namespace: default}\n"
            f"stringData: {{api-key: {UPSTREAM_KEY}}}\n",
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: client-key, namespace: default}\n"
            f"stringData: {{key: {CLIENT_KEY}}}\n",
            "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelClient\n"
            "metadata: {name: team, namespace: default}\n"
            "spec:\n  keySecretRef: {name: client-key, key: key}\n"
            "  limits: {requestsPerMinute: 1000000, tokensPerMinute: 100000000}\n",
            backend("good", "good"),
            backend("bad", "bad"),
            route("chat", "{name: good}"),
            route("error", "{name: bad}", "  retries: {attempts: 1}\n"),
            route("fallback", "{name: bad}", "  fallbacks: [{name: good}]\n  retries: {attempts: 1}\n"),
            route("limited", "{name: good}", "  limits: {requestsPerMinute: 120}\n"),
            route("cached", "{name: good}", "  cache: {ttl: 30s, maxBytes: 1Mi, scope: Route}\n"),
        ]
    )


# --- the load --------------------------------------------------------------------------------


@dataclass
class Load:
    url: str
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def one(self, session: aiohttp.ClientSession, kind: str, n: int) -> str:
        key = GATEWAY_KEY if n % 2 else CLIENT_KEY
        headers = {"Authorization": f"Bearer {key}"}
        model = {"json": "chat", "stream": "chat", "abort": "chat", "bad_body": "chat"}.get(kind, kind)
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"soak {n}"}]}
        if kind == "unauthorized":
            headers = {"Authorization": f"Bearer {CLIENT_KEY}x"}
            model = body["model"] = "chat"
        if kind == "cached":
            body["messages"][0]["content"] = f"cached {n % 16}"  # a small set of repeated prompts
        if kind in ("stream", "abort"):
            body["stream"] = True
        data = b'{"model": "chat", "messages": [' if kind == "bad_body" else orjson.dumps(body)
        headers["Content-Type"] = "application/json"
        url = f"{self.url}/v1/chat/completions"
        async with session.post(url, data=data, headers=headers) as response:
            if kind == "abort" and response.status == 200:
                await response.content.readline()  # the first event, then drop the connection
                response.close()
                return "200-aborted"
            text = await response.read()
            if kind == "stream" and response.status == 200 and not text.rstrip().endswith(b"[DONE]"):
                return "200-truncated"
            if kind == "cached":
                return f"{response.status}-{response.headers.get('x-routeway-cache')}"
            return str(response.status)

    async def loop(self, index: int) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for n in itertools.count(index):
                if self.stop.is_set():
                    return
                kind = KINDS[n % len(KINDS)]
                try:
                    outcome = await self.one(session, kind, n)
                except (TimeoutError, aiohttp.ClientError) as error:
                    outcome = f"client-error:{type(error).__name__}"
                self.counts[kind, outcome] += 1


def failure_verdict(counts: Counter[tuple[str, str]], bound: float) -> tuple[bool, str]:
    """Whether the kinds with a known answer got it often enough (a run where every request
    failed must not pass for flat memory)."""
    total = sum(c for (kind, _), c in counts.items() if kind in EXPECTED)
    failed = sum(
        c for (kind, outcome), c in counts.items() if kind in EXPECTED and outcome not in EXPECTED[kind]
    )
    rate = failed / total if total else 1.0
    ok = total > 0 and rate <= bound
    return (
        ok,
        f"unexpected answers: {failed} of {total} ({rate:.2%}, bound {bound:.2%}): {'ok' if ok else 'FAILED'}",
    )


# --- sampling --------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def workers_of(supervisor: int) -> list[int]:
    found = []
    for pid in children(supervisor):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                found.append(pid)
    return sorted(found)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (units of y per unit of x)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


@dataclass
class Series:
    name: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, rss MiB, fds)

    def verdict(self, warmup: float, rss_tolerance: float, fd_tolerance: int) -> tuple[bool, str]:
        after = [s for s in self.samples if s[0] >= warmup]
        if len(after) < 3:
            return False, f"{self.name}: too few samples after warm-up ({len(after)})"
        span = after[-1][0] - after[0][0]
        rss_slope = slope([(t, r) for t, r, _ in after])
        fd_slope = slope([(t, float(f)) for t, _, f in after])
        projected = rss_slope * span
        fd_min, fd_last = min(f for *_, f in after), after[-1][2]
        half = len(after) // 2
        fd_early, fd_late = max(f for *_, f in after[:half]), max(f for *_, f in after[half:])
        rss_flat = projected < rss_tolerance
        fd_flat = fd_late <= fd_early + fd_tolerance  # in-flight connections make single samples noisy
        line = (
            f"{self.name}: RSS {after[0][1]:.1f} → {after[-1][1]:.1f} MiB (min {min(r for _, r, _ in after):.1f}, "
            f"max {max(r for _, r, _ in after):.1f}), slope {rss_slope * 3600:+.2f} MiB/h, "
            f"projected {projected:+.2f} MiB over {span:.0f} s; fds {after[0][2]} → {fd_last} "
            f"(min {fd_min}, max {fd_early} in the first half and {fd_late} in the second), "
            f"slope {fd_slope * 3600:+.2f}/h: "
            f"{'flat' if rss_flat and fd_flat else 'GROWING'}"
        )
        return rss_flat and fd_flat, line


# --- the run ---------------------------------------------------------------------------------


async def wait_for(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"not ready within {within}s: {url}")


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    port, upstream_port, admin_port = args.port, args.port + 1, args.port + 2
    upstream = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--upstream", str(upstream_port), start_new_session=True
    )
    (workdir / "m.yaml").write_text(manifests(f"http://127.0.0.1:{upstream_port}"))
    log = (workdir / "routeway.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "routeway.cli", "serve", "-f", str(workdir / "m.yaml"),
        "--port", str(port), "--admin-port", str(admin_port), "--workers", "2",
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        await wait_for(f"http://127.0.0.1:{admin_port}/readyz")
        workers = workers_of(serve.pid)
        if len(workers) != 2:
            raise SystemExit(f"expected 2 workers, found {workers}")
        series = {pid: Series(f"worker {i + 1} (pid {pid})") for i, pid in enumerate(workers)}
        series[serve.pid] = Series(f"supervisor (pid {serve.pid})")
        load = Load(f"http://127.0.0.1:{port}")
        loops = [asyncio.create_task(load.loop(i)) for i in range(args.concurrency)]
        start = time.monotonic()
        print(f"soak: {args.duration:.0f} s, {args.concurrency} connections, workers {workers}", flush=True)
        print("   t(s)  requests  " + "  ".join(f"{s.name.split(' (')[0]:>22}" for s in series.values()))
        while (now := time.monotonic() - start) <= args.duration:
            if workers_of(serve.pid) != workers:
                raise SystemExit(f"workers changed: {workers} → {workers_of(serve.pid)}")
            for pid, s in series.items():
                s.samples.append((now, rss_mib(pid), fds(pid)))
            cells = "  ".join(
                f"{s.samples[-1][1]:9.1f} MiB {s.samples[-1][2]:4d} fd" for s in series.values()
            )
            print(f"{now:7.0f}  {sum(load.counts.values()):8d}  {cells}", flush=True)
            await asyncio.sleep(args.interval)
        load.stop.set()
        await asyncio.gather(*loops)
        print("\nrequests by kind and outcome:")
        for kind in KINDS:
            outcomes = {o: c for (k, o), c in sorted(load.counts.items()) if k == kind}
            print(f"  {kind:>12}: {sum(outcomes.values()):7d}  {outcomes}")
        print(f"  {'total':>12}: {sum(load.counts.values()):7d}")
        results = [s.verdict(args.warmup, args.rss_tolerance, args.fd_tolerance) for s in series.values()]
        print(f"\nverdict (after {args.warmup:.0f} s warm-up):")
        for _, line in results:
            print(f"  {line}")
        flat = all(ok for ok, _ in results)
        answered, line = failure_verdict(load.counts, args.max_failure_rate)
        print(f"  {line}")
        print(("FLAT" if flat else "NOT FLAT") + ("" if answered else ", REQUESTS FAILED"))
        return 0 if flat and answered else 1
    finally:
        for proc in (serve, upstream):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 40)
                except TimeoutError:
                    proc.kill()
        log.close()
        leaked = [line for line in (workdir / "routeway.log").read_text(errors="replace").splitlines() if any(
            key in line for key in (UPSTREAM_KEY, CLIENT_KEY, GATEWAY_KEY))]  # fmt: skip
        text = (workdir / "routeway.log").read_text(errors="replace")
        levels = Counter(line.split()[2] for line in text.splitlines() if len(line.split()) > 2)
        levels = Counter(
            {k: v for k, v in levels.items() if k in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}
        )
        print(f"log: {dict(levels)} lines by level, {text.count('Traceback')} tracebacks, "
              f"{len(leaked)} lines with a planted key")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--warmup", type=float, default=120, help="seconds left out of the verdict")
    parser.add_argument("--interval", type=float, default=15, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=8, help="client loops (default 8)")
    parser.add_argument("--port", type=int, default=18600, help="client port; +1 upstream, +2 admin")
    parser.add_argument("--rss-tolerance", type=float, default=4.0, help="MiB of projected growth")
    parser.add_argument(
        "--fd-tolerance", type=int, default=8, help="fds the second half's maximum may exceed the first's by"
    )
    parser.add_argument(
        "--max-failure-rate",
        type=float,
        default=0.01,
        help="share of requests of kinds with a known answer that may get another (default 0.01)",
    )
    parser.add_argument("--upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return 0
    with tempfile.TemporaryDirectory(prefix="routeway-soak-") as workdir:
        return asyncio.run(soak(args, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
