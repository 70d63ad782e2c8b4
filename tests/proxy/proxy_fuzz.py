"""The fuzz harness shared by `test_proxy_fuzz.py` (bounded, in the suite) and `scripts/fuzz`
(a longer run that prints counts): a real gateway app, real upstreams, raw requests, an oracle.

The target: `create_proxy_app` on 127.0.0.1 with client keys required and the access log on,
routes to a loopback aiohttp upstream (`gpt`, sticky by `x-session`; `canary`, a rollout
split by `x-session`; `cached`, with the response cache; `limited`, with request and token
limits) and to the built-in `mock` provider (`mock`). Requests are sent
as raw bytes over a socket, so header values can hold bytes an HTTP client would refuse
(obs-text 0x80-0xFF); bytes aiohttp's parser itself rejects (CR, LF, NUL and other controls)
are the connection-level fuzz's (`conn`), not this one's — they never reach the app.

The oracle (`check`): no 5xx made by the gateway itself (the upstream marks each of its answers
with `x-fuzz-upstream`, so a relayed status is told apart), every 4xx and every gateway-made
answer JSON in the OpenAI error shape, no log record at ERROR or with a traceback, and the
upstream never received a body that is not a JSON object (what the gateway re-serialises),
and a request the gateway refused with a 4xx never reached the upstream.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from proxy_helpers import make_backend, make_config, make_route, start_site
from routeway_proxy.access_log import AccessLog
from routeway_proxy.app import create_proxy_app
from routeway_proxy.runtime import ProxyRuntime

from routeway.proxyconfig import ClientConfig, GatewayConfig, ProxyConfig, RouteConfig, hash_client_key

KEY = "sk-fuzz-PLANTED-7c1d9e"
UPSTREAM_MARK = "x-fuzz-upstream"
MODELS = ("gpt", "cached", "limited", "canary", "mock", "absent")
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/gpt")
SHAPE_KEYS = {"message", "type", "param", "code"}
ANSWER_WAIT = 30.0  # seconds: a bound for a hang, never reached by a working gateway


# --- the target -------------------------------------------------------------------------


@dataclass
class UpstreamLog:
    received: int = 0
    not_json: list[bytes] = field(default_factory=list)
    last_body: bytes = b""
    last_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # as received


def build_fuzz_upstream(log: UpstreamLog) -> web.Application:
    """An OpenAI-compatible upstream that answers any JSON object, and notes anything else."""

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        log.received += 1
        log.last_body = raw
        log.last_headers = list(request.raw_headers)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            log.not_json.append(raw[:200])
            return web.json_response(
                {"error": {"message": "not json"}}, status=400, headers={UPSTREAM_MARK: "1"}
            )
        endpoint = request.match_info["endpoint"]
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if endpoint == "embeddings":
            document: dict[str, Any] = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}],
                "model": "m",
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        elif body.get("stream") is True:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", UPSTREAM_MARK: "1"})
            await response.prepare(request)
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            await response.write(
                b"data: "
                + orjson.dumps(
                    {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
                )
                + b"\n\n"
            )
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        else:
            document = {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
        return web.json_response(document, headers={UPSTREAM_MARK: "1"})

    app = web.Application(client_max_size=2**24)
    app.router.add_post("/v1/{endpoint:.+}", handle)
    return app


def fuzz_config(upstream_url: str) -> ProxyConfig:
    """The gateway's config: every feature that reads a header or a body field is on."""
    backends = [
        make_backend("up", f"{upstream_url}/v1", failures=1_000_000),
        make_backend("sim", None, provider="mock", mock={"maxTokens": 4}),
    ]

    def route(model: str, backend: str, **extra: Any) -> RouteConfig:
        base = make_route(model, [(backend, 1)], sticky="x-session" if model == "gpt" else None)
        return RouteConfig.model_validate({**base.model_dump(by_alias=True), **extra})

    canary = {
        "revision": "c0ffee",
        "weight": 50.0,
        "targets": [{"backend": "ns/up", "model": "canary-model", "weight": 1}],
        "retries": {"attempts": 0},
        "stickyHeader": "x-session",
    }
    routes = [
        route("gpt", "up"),
        route("canary", "up", revision="5ab1e", canary=canary, stickyHeader="x-session"),
        route("cached", "up", cache={"ttl": 60.0, "maxBytes": 1_000_000}),
        route("limited", "up", limits={"requestsPerMinute": 10**9, "tokensPerMinute": 10**12}),
        route("mock", "sim"),
    ]
    config = make_config(backends, routes, max_body_bytes=1_000_000)
    gateway = GatewayConfig.model_validate(
        {
            **config.gateway.model_dump(by_alias=True),
            "requireClientKey": True,
            "clients": [ClientConfig.model_validate({"id": "ns/team", "keyRef": "ns/team-key/k"})],
        }
    )
    return config.model_copy(update={"gateway": gateway}).with_revision()


class RecordCapture(logging.Handler):
    """Every record at WARNING or above, and every record with a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@dataclass
class Target:
    host: str
    port: int
    upstream: UpstreamLog
    capture: RecordCapture
    runtime: ProxyRuntime


@asynccontextmanager
async def fuzz_target() -> AsyncIterator[Target]:
    """The gateway and its upstream on 127.0.0.1, logs captured, for the duration of the block."""
    # objects an earlier test in this process left behind (an unclosed client session) are
    # collected now, not while the capture runs: their asyncio ERROR is not the gateway's
    gc.collect()
    capture = RecordCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    upstream = UpstreamLog()
    upstream_runner, upstream_url = await start_site(build_fuzz_upstream(upstream))
    runtime = ProxyRuntime()
    runtime.metrics.access = AccessLog()  # `--access-log`: it writes the request's path
    runtime.apply(fuzz_config(upstream_url), {"ns/team-key/k": hash_client_key(KEY)})
    runner, url = await start_site(create_proxy_app(runtime))
    host, port = url.removeprefix("http://").split(":")
    try:
        yield Target(host, int(port), upstream, capture, runtime)
    finally:
        await runner.cleanup()
        await upstream_runner.cleanup()
        root.removeHandler(capture)


# --- one request ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: bytes
    path: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    chunked: bool = False  # sent with Transfer-Encoding: chunked (no Content-Length)

    def __repr__(self) -> str:  # short: a 1,500-level body or an 8 KB header fills a screen
        headers = [(n, v if len(v) <= 60 else v[:60] + b"...(%d bytes)" % len(v)) for n, v in self.headers]
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        chunked = ", chunked" if self.chunked else ""
        return f"Case({self.method!r}, {self.path!r}, headers={headers!r}, body={body!r}{chunked})"

    def wire(self) -> bytes:
        lines = [self.method + b" " + self.path + b" HTTP/1.1", b"Host: fuzz", b"Connection: close"]
        lines += [name + b": " + value for name, value in self.headers]
        if not self.chunked:
            lines.append(b"Content-Length: %d" % len(self.body))
            return b"\r\n".join(lines) + b"\r\n\r\n" + self.body
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [self.body[i : i + 7] for i in range(0, len(self.body), 7)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        return b"\r\n".join(lines) + b"\r\n\r\n" + chunks + b"0\r\n\r\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(target: Target, case: Case) -> Answer:
    """Send the case on a fresh connection and read the whole answer (the server closes)."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(case.wire())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), ANSWER_WAIT)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Answer(status, headers, body)


def dechunk(raw: bytes) -> bytes:
    parts = []
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append(raw[:size])
        raw = raw[size + 2 :]
    return b"".join(parts)


# --- the oracle -------------------------------------------------------------------------


def outcome(case: Case, answer: Answer) -> str:
    """A short name of what happened, for the counts (`2xx`, `4xx 401 invalid_api_key`...)."""
    if answer.status < 400:
        return f"{answer.status // 100}xx"
    source = "upstream" if UPSTREAM_MARK in answer.headers else "gateway"
    code = " (HEAD: no body)" if case.method == b"HEAD" else ""
    if source == "gateway" and case.method != b"HEAD":
        code = " " + str(orjson.loads(answer.body)["error"]["code"])
    return f"{answer.status} {source}{code}"


def check(case: Case, answer: Answer) -> list[str]:
    """What is wrong with one answer (empty: nothing)."""
    problems = []
    made_here = UPSTREAM_MARK not in answer.headers
    if made_here and answer.status >= 500:
        problems.append(f"gateway-made {answer.status}")
    if KEY.encode() in answer.body or any(KEY in v for v in answer.headers.values()):
        problems.append("the client key is echoed")
    if answer.status >= 400 and made_here and case.method != b"HEAD":
        problems += check_error_shape(answer)
    return problems


def check_error_shape(answer: Answer) -> list[str]:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return [f"{answer.status} with Content-Type {answer.headers.get('content-type')!r}"]
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return [f"{answer.status} with a body that is not JSON: {answer.body[:100]!r}"]
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict) or set(error) != SHAPE_KEYS or not isinstance(error["message"], str):
        return [f"{answer.status} not in the OpenAI error shape: {answer.body[:200]!r}"]
    if not isinstance(error["type"], str):
        return [f"{answer.status} with an error type that is not a string"]
    return []


def drain_log_problems(target: Target) -> list[str]:
    """The captured ERROR records and tracebacks since the last call (and forget them)."""
    records, target.capture.records = target.capture.records, []
    problems = []
    for record in records:
        text = record.getMessage()
        if record.exc_info:
            text += f" ({record.exc_info[0].__name__ if record.exc_info[0] else 'traceback'})"
        problems.append(f"log {record.levelname} {record.name}: {text[:200]}")
        if KEY in text:
            problems.append("the client key is in a log record")
    if target.upstream.not_json:
        problems.append(
            f"the upstream received a body that is not a JSON object: {target.upstream.not_json[0]!r}"
        )
        target.upstream.not_json.clear()
    return problems


@dataclass
class Tally:
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Case, list[str]]] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        yield f"{self.cases} cases, {len(self.failures)} failing"
        for name, count in sorted(self.outcomes.items(), key=lambda item: (-item[1], item[0])):
            yield f"  {count:7d}  {name}"


async def run_case(target: Target, case: Case, tally: Tally) -> list[str]:
    before = target.upstream.received
    answer = await send(target, case)
    problems = check(case, answer) + drain_log_problems(target)
    if (
        400 <= answer.status < 500
        and UPSTREAM_MARK not in answer.headers
        and target.upstream.received != before
    ):
        problems.append(f"refused with {answer.status} after calling the upstream")
    tally.cases += 1
    tally.outcomes[outcome(case, answer) if not problems else "FAILED"] += 1
    if problems:
        tally.failures.append((case, problems))
    return problems
