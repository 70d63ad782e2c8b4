"""Reloads and drain under load: issue 14's "200 config reloads under load with streams, SIGTERM
drain under load: 0 failed or truncated requests", as a run anyone can repeat.

    .venv/bin/python bench/reloads.py [--reloads 200] [--concurrency 8] [--port 18600]

What runs (all on 127.0.0.1, in one temporary directory, stopped at the end):
- an upstream (this file with `--upstream`, its own process) answering JSON and SSE streams
  (20 content events and a usage event, 10 ms apart, then `[DONE]`; `slow` streams take 3 s).
  Each answer names who made it — `backend|model|key` — in its first content, so the client can
  tell which backend (URL path), upstream model (the backend's `model`) and upstream key (from
  the upstream-key Secret) served it; a key of the wrong form is answered 401;
- `routeway serve --workers 2` on one manifest file with two backends and one route;
- `--concurrency` client loops sending JSON and streamed chats in turn (aiohttp, raw bytes
  checked) while the script saves the file `--reloads` times, in turn:
  `rewrite` (the whole file: new upstream models and new route weights, one backend or both),
  `typo` (the route names a backend that does not exist, with a backend edit in the same save:
  the route keeps its last good version, the backend edit applies), `backend` (one backend's
  model edited), `secret` (the upstream key rotated), `unparseable` (the file does not parse),
  `broken-secret` (the key Secret's `data:` is not base64, or its key is removed: the Secret
  keeps its last good value). After each save the script waits until it settled: the new
  backends answer 8 probes in a row on fresh connections, or `/routes` reports the bad save.

Every answer is checked: a JSON answer is 200 and parses; a stream is 200, every event is whole
(`data: ` and JSON) and it ends with `[DONE]` after all its events (anything less is truncated);
each names the backend, model and key expected once the reload it started under had settled
(answers started while a reload was settling may come from either side of it).

Then two SIGTERM drains under the same load: the first with the default `--drain-timeout`
(every request in flight finishes), the second with a fresh `serve --drain-timeout 0.5` and
3 s streams, so streams in flight are ended with the documented `gateway_shutting_down` error
event and JSON requests caught before their answer get the 503. Requests in flight at SIGTERM
must finish or get that answer; a connection refused for a request started after SIGTERM is the
closed listener, counted apart. Exit 0 when nothing failed, 1 otherwise. The output is what
docs/reliability.md "## Reloads and drain under load" records. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import statistics
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

KEY_PREFIX = "sk-up-RELOADS-"
KINDS = ("rewrite", "typo", "backend", "secret", "unparseable", "broken-secret")
SETTLE_PROBES = 8
LAST_GOOD = "serving the last good version"

# --- the upstream (its own process) ----------------------------------------------------------


def _chunk(model: str, content: str | None, usage: bool = False) -> bytes:
    event: dict[str, Any] = {"id": "r", "object": "chat.completion.chunk", "model": model, "choices": []}
    if content is not None:
        event["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    if usage:
        event["usage"] = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def _answer(request: web.Request) -> web.StreamResponse:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith(f"Bearer {KEY_PREFIX}"):
        error = {"error": {"message": "bad key", "type": "auth", "code": None, "param": None}}
        return web.json_response(error, status=401)
    key = auth.removeprefix(f"Bearer {KEY_PREFIX}")
    body = await request.json()
    model = body.get("model", "m")
    marker = f"{request.match_info['backend']}|{model}|{key}"
    if not body.get("stream"):
        answer = {
            "id": "r",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": marker}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
    events, gap = (150, 0.02) if request.match_info["backend"] == "slow" else (20, 0.01)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(_chunk(model, marker))
        for i in range(1, events):
            await asyncio.sleep(gap)
            await response.write(_chunk(model, f" w{i}"))
        await response.write(_chunk(model, None, usage=True) + b"data: [DONE]\n\n")
        await response.write_eof()
    return response


def run_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_post("/{backend}/v1/chat/completions", _answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# --- the gateway's file ----------------------------------------------------------------------


@dataclass
class Files:
    """What the manifest says now; `expected` is what a settled gateway answers with."""

    upstream: str
    models: dict[str, str] = field(default_factory=lambda: {"a": "m-a-0", "b": "m-b-0"})
    weights: dict[str, int] = field(default_factory=lambda: {"a": 1, "b": 0})
    key: int = 0

    def text(self, *, typo: bool = False, secret: str | None = None) -> str:
        docs = [
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelGateway\nmetadata: {name: default}\nspec: {}\n"
        ]
        for name, model in self.models.items():
            docs.append(
                "apiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\n"
                f"metadata: {{name: {name}}}\n"
                f"spec:\n  provider: openai\n  url: {self.upstream}/{name}/v1\n  model: {model}\n"
                "  apiKeySecretRef: {name: upstream-key, key: api-key}\n"
            )
        docs.append(
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\nmetadata: {name: slow}\n"
            f"spec:\n  provider: openai\n  url: {self.upstream}/slow/v1\n  model: slow\n"
            "  apiKeySecretRef: {name: upstream-key, key: api-key}\n"
        )
        refs = ", ".join(
            f"{{name: {'upstreem' if typo else name}, weight: {w}}}" for name, w in self.weights.items() if w
        )
        docs.append(
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\n"
            f"spec:\n  model: chat\n  backends: [{refs}]\n"
        )
        docs.append(
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: slow}\n"
            "spec:\n  model: slow\n  backends: [{name: slow}]\n"
        )
        docs.append(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: upstream-key}\n"
            + (secret or f"stringData: {{api-key: {KEY_PREFIX}{self.key}}}\n")
        )
        return "---\n".join(docs)

    def expected(self) -> frozenset[str]:
        return frozenset(f"{n}|{self.models[n]}|{self.key}" for n, w in self.weights.items() if w)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


# --- checking answers ------------------------------------------------------------------------


def stream_verdict(
    status: int, body: bytes, events: int, *, draining: bool = False
) -> tuple[str, str | None]:
    """(outcome, marker): `ok` (all `events` data events, whole, then `[DONE]`), `shutting-down`
    (the documented drain answer: a 503, or the stream ended by its error event), `truncated`
    (a partial event, events missing, no end), `failed-…` (another status or error event)."""
    if status != 200:
        return ("shutting-down" if draining and _is_shutdown(status, body) else f"failed-{status}"), None
    parts = body.split(b"\n\n")
    if parts[-1].strip():
        return "truncated", None  # a partial last event
    got = [p for p in parts if p.strip()]
    marker = None
    for i, event in enumerate(got):
        last = i == len(got) - 1
        if not event.startswith(b"data: "):
            return "truncated", marker
        data = event[6:]
        if data == b"[DONE]":
            return ("ok" if last and i == events else "truncated"), marker
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "truncated", marker
        if "error" in parsed:
            shutdown = draining and last and parsed["error"].get("code") == "gateway_shutting_down"
            return ("shutting-down" if shutdown else "failed-event"), marker
        choices = parsed.get("choices") or []
        if i == 0 and choices:
            marker = choices[0]["delta"].get("content")
    return "truncated", marker


def json_verdict(status: int, body: bytes, *, draining: bool = False) -> tuple[str, str | None]:
    if status != 200:
        return ("shutting-down" if draining and _is_shutdown(status, body) else f"failed-{status}"), None
    try:
        parsed = orjson.loads(body)
        return "ok", parsed["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return "truncated", None


def _is_shutdown(status: int, body: bytes) -> bool:
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
        error = orjson.loads(body)["error"]
        return (
            status == 503
            and error["code"] == "gateway_shutting_down"
            and {"message", "type", "param"} <= set(error)
        )
    return False


# --- the load --------------------------------------------------------------------------------


@dataclass
class Load:
    url: str
    route: str = "chat"
    epoch: int = 0  # bumped at each save
    settled: int = -1  # the epoch whose answers are known
    expected: frozenset[str] = frozenset()
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"json": [], "stream": []})
    wrong: list[str] = field(default_factory=list)
    samples: dict[str, bytes] = field(default_factory=dict)  # the first answer of each bad outcome
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sigterm_at: float | None = None  # monotonic time of SIGTERM: no new request after it
    in_flight: int = 0
    usage_streams: int = 0
    at_sigterm: Counter[str] = field(default_factory=Counter)  # outcomes of those in flight
    note: str = ""  # the drain's line for the summary

    async def one(self, session: aiohttp.ClientSession, kind: str) -> None:
        body: dict[str, Any] = {"model": self.route, "messages": [{"role": "user", "content": "hi"}]}
        usage = kind == "stream" and self.usage_streams % 2 == 0
        if kind == "stream":
            body["stream"] = True
            self.usage_streams += 1
            if usage:  # the usage event is relayed only to a client that asks for it
                body["stream_options"] = {"include_usage": True}
        epoch, checked, expected = self.epoch, self.settled == self.epoch, self.expected
        started = time.monotonic()
        self.in_flight += 1
        try:
            async with session.post(f"{self.url}/v1/chat/completions", data=orjson.dumps(body),
                                    headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                status, raw = response.status, await response.read()
        except aiohttp.ClientConnectorError:
            # the connection was refused: the request never reached the gateway (after SIGTERM
            # the listener is closed), counted apart; before SIGTERM it is a failure
            self.counts[kind, "refused" if self.sigterm_at is not None else "client-error:refused"] += 1
            return
        except (aiohttp.ClientError, TimeoutError) as error:
            self.counts[kind, f"client-error:{type(error).__name__}"] += 1
            return
        finally:
            self.in_flight -= 1
        self.latencies[kind].append(time.monotonic() - started)
        draining = self.sigterm_at is not None
        if kind == "stream":
            events = (150 if self.route == "slow" else 20) + usage  # content events (and usage)
            outcome, marker = stream_verdict(status, raw, events, draining=draining)
        else:
            outcome, marker = json_verdict(status, raw, draining=draining)
        self.counts[kind, outcome] += 1
        if draining:
            self.at_sigterm[outcome] += 1  # started before SIGTERM, ended after: in flight
        if outcome not in ("ok", "shutting-down"):
            self.samples.setdefault(f"{kind} {outcome}", raw[-600:])
        if outcome == "ok" and checked and self.epoch == epoch and marker not in expected:
            self.wrong.append(f"epoch {epoch}: {kind} answered by {marker}, expected {sorted(expected)}")

    async def loop(self, index: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for n in itertools.count(index):
                if self.stop.is_set() or self.sigterm_at is not None:
                    return
                await self.one(session, "stream" if n % 2 else "json")


async def probe(url: str, route: str = "chat") -> str | None:
    """The marker of one JSON answer on a fresh connection (so both workers get asked)."""
    body = orjson.dumps({"model": route, "messages": [{"role": "user", "content": "probe"}]})
    connector = aiohttp.TCPConnector(force_close=True)
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as response,
    ):
        return json_verdict(response.status, await response.read())[1]


async def problems(admin: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.get(f"{admin}/routes") as response:
        found: list[str] = (await response.json()).get("problems", [])
        return found


class NotSettled(Exception):
    """A save whose effect did not show in time: a failure of the run, reported as such."""


async def until(check: Any, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise NotSettled(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    url: str
    admin: str


async def start_serve(workdir: Path, port: int, *extra: str) -> Gateway:
    log = (workdir / f"routeway-{port}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "routeway.cli", "serve", "-f", str(workdir / "m.yaml"),
        "--port", str(port), "--admin-port", str(port + 1), "--workers", "2", *extra,
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    log.close()
    gateway = Gateway(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}")

    async def ready() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin}/readyz") as r:
                return r.status == 200
        return False

    await until(ready, "serve ready", within=60)
    return gateway


async def settle(kind: str, files: Files, gateway: Gateway, load: Load) -> None:
    """Wait until the save of `kind` shows: the expected answers on fresh connections (both
    workers), and for a bad save its report at /routes."""
    wanted = {
        "typo": ("upstreem", LAST_GOOD),
        "unparseable": ("malformed YAML",),
        "broken-secret": ("Secret/upstream-key", LAST_GOOD),
    }.get(kind)
    if wanted is not None:

        async def reported() -> bool:
            found = await problems(gateway.admin)
            return all(any(w in p for p in found) for w in wanted)

        await until(reported, f"{kind} reported at /routes")
    expected, streak = files.expected(), 0

    async def probes() -> bool:
        nonlocal streak
        streak = streak + 1 if await probe(gateway.url) in expected else 0
        return streak >= SETTLE_PROBES

    await until(probes, f"{kind}: answers from {sorted(expected)}")
    load.expected, load.settled = expected, load.epoch


async def reload_once(n: int, kind: str, files: Files, path: Path) -> None:
    """One save of `kind`; `files` keeps what the gateway should serve afterwards."""
    if kind == "rewrite":
        files.models = {name: f"m-{name}-{n}" for name in files.models}
        files.weights = [{"a": 1, "b": 0}, {"a": 1, "b": 1}, {"a": 0, "b": 3}, {"a": 2, "b": 1}][n % 4]
        write_atomically(path, files.text())
    elif kind == "typo":
        files.models["a"] = f"m-a-{n}"  # a good backend edit in the same save applies
        write_atomically(path, files.text(typo=True))
    elif kind == "backend":
        files.models["b"] = f"m-b-{n}"
        write_atomically(path, files.text())
    elif kind == "secret":
        files.key += 1
        write_atomically(path, files.text())
    elif kind == "unparseable":
        write_atomically(path, files.text().replace("kind: ModelRoute", "kind: [ModelRoute", 1))
    else:  # broken-secret: not base64, or the key the backends use removed
        broken = "data: {api-key: 'not base64 !'}\n" if n % 2 else f"stringData: {{other: {KEY_PREFIX}x}}\n"
        write_atomically(path, files.text(secret=broken))


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summary(title: str, load: Load) -> int:
    failed = sum(c for (_, o), c in load.counts.items() if o not in ("ok", "shutting-down", "refused"))
    truncated = sum(c for (_, o), c in load.counts.items() if o == "truncated")
    print(f"{title}:")
    if load.note:
        print(f"  {load.note}")
    for kind in ("json", "stream"):
        outcomes = {o: c for (k, o), c in sorted(load.counts.items()) if k == kind}
        lat = load.latencies[kind]
        print(f"  {kind:>6}: {sum(outcomes.values()):6d} {outcomes}  "
              f"p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms")  # fmt: skip
    print(f"  failed {failed}, truncated {truncated}, wrong backend/model/key {len(load.wrong)}")
    for line in load.wrong[:10]:
        print(f"    {line}")
    for what, sample in load.samples.items():
        print(f"    first {what} answer (its end): {sample!r}")
    return failed + len(load.wrong)


async def drain(gateway: Gateway, load: Load, concurrency: int, seconds: float) -> int:
    """Load for `seconds`, SIGTERM, and every request in flight must finish or get the drain
    answer; new requests stop at SIGTERM (the listener is closed then)."""
    loops = [asyncio.create_task(load.loop(i)) for i in range(concurrency)]
    await asyncio.sleep(seconds)
    in_flight = load.in_flight
    load.sigterm_at = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    await asyncio.gather(*loops)
    code = await asyncio.wait_for(gateway.process.wait(), 60)
    ended = dict(load.at_sigterm)
    load.note = f"SIGTERM with {in_flight} requests in flight, which ended {ended}; serve exited {code}"
    return 0 if code == 0 else 1


async def run(args: argparse.Namespace, workdir: Path) -> int:
    upstream_port = args.port + 9
    upstream = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--upstream", str(upstream_port), start_new_session=True
    )
    path = workdir / "m.yaml"
    files = Files(f"http://127.0.0.1:{upstream_port}")
    path.write_text(files.text())
    gateways: list[Gateway] = []
    bad = 0
    try:
        gateway = await start_serve(workdir, args.port)
        gateways.append(gateway)
        load = Load(gateway.url)
        await settle("start", files, gateway, load)
        loops = [asyncio.create_task(load.loop(i)) for i in range(args.concurrency)]
        reloads: Counter[str] = Counter()
        started = time.monotonic()
        for n in range(1, args.reloads + 1):
            kind = KINDS[(n - 1) % len(KINDS)]
            load.epoch += 1
            await reload_once(n, kind, files, path)
            try:
                await settle(kind, files, gateway, load)
            except NotSettled as error:
                print(f"reload {n} ({kind}) FAILED: {error}")
                bad += 1
                break
            reloads[kind] += 1
        took = time.monotonic() - started
        print(f"reloads: {sum(reloads.values())} in {took:.0f} s, {dict(reloads)}")
        bad += summary(f"requests during the reloads ({args.concurrency} clients, 2 workers)", load)
        load.stop.set()
        await asyncio.gather(*loops)
        # drain 1: the same gateway, default --drain-timeout: everything in flight finishes
        drained = Load(gateway.url, epoch=load.epoch, settled=load.settled, expected=load.expected)
        bad += await drain(gateway, drained, args.concurrency, 3)
        bad += summary("drain, default --drain-timeout (30 s)", drained)
        # drain 2: 3 s streams, --drain-timeout 0.5: streams in flight get the drain answer
        write_atomically(path, files.text())  # the last save may have been a bad one
        gateway = await start_serve(workdir, args.port + 2, "--drain-timeout", "0.5")
        gateways.append(gateway)
        short = Load(gateway.url, route="slow")
        bad += await drain(gateway, short, args.concurrency, 4)
        bad += summary("drain, --drain-timeout 0.5 with 3 s streams", short)
    finally:
        for proc in (*(g.process for g in gateways), upstream):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 40)
                except TimeoutError:
                    proc.kill()
    print("PASS: 0 failed or truncated" if bad == 0 else f"FAIL: {bad} failed, truncated or wrong")
    return 0 if bad == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=200, help="saves of the file (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="client loops (default 8)")
    parser.add_argument("--port", type=int, default=18600, help="first of the ports used (default 18600)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="routeway-reloads-"))
    try:
        return asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"logs in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
