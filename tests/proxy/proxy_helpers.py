"""Helpers of the proxy tests: a scripted upstream server, the gateway, config builders.

The upstream is one aiohttp app whose base URL path picks a behaviour, so each backend of a
test config is `http://127.0.0.1:<port>/<behaviour>/v1`:
- `ok`: OpenAI-shaped answers (chat, completions, embeddings), SSE when `stream` is true, with
  the usage chunk only when `stream_options.include_usage` is set;
- `status-<code>`: that status with an OpenAI error body (`status-<code>-plain`: a text body);
- `stall`: never answers (until the test ends);
- `stall-mid`: streams two events, then stalls;
- `drop-mid`: streams two events, then closes the connection;
- `echo`: answers the received headers and body as JSON;
- `gate`: streams one event, then waits for `upstream.release` before finishing;
- `trickle`: streams ten events 50 ms apart (longer than a 0.2 s idle bound in total);
- `flaky-<n>`: fails with 503 `n` times per test, then behaves like `ok`.
Every request is recorded (`upstream.seen`) and a cancelled handler (the gateway hung up)
is recorded in `upstream.cancelled` and signalled through `upstream.cancel_seen`.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from routeway_proxy.app import APP_RUNNER_OPTIONS
from routeway_proxy.runtime import ProxyRuntime

from routeway.proxyconfig import (
    BackendConfig,
    GatewayConfig,
    ProxyConfig,
    RouteConfig,
)

CLIENT_LABELLED = frozenset({"routeway_requests_total", "routeway_tokens_total"})
"""Families with a `client` label ("" for requests of no ModelClient)."""


@dataclass
class Seen:
    behaviour: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    header_items: list[tuple[str, str]]  # as received, repeated names included


@dataclass
class Upstream:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancel_seen: asyncio.Event = field(default_factory=asyncio.Event)
    stall: asyncio.Event = field(default_factory=asyncio.Event)  # set at teardown only
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    flaky_counts: dict[str, int] = field(default_factory=dict)

    def base(self, behaviour: str) -> str:
        return f"{self.url}/{behaviour}/v1"


def chat_document(model: str, text: str = "hello there") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chat_chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def usage_chunk(model: str) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _with_usage_null(event: bytes) -> bytes:
    return event.replace(b'"choices"', b'"usage":null,"choices"', 1)


def build_upstream_app(state: Upstream) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        endpoint = request.match_info["endpoint"]
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        state.seen.append(
            Seen(behaviour, request.path, dict(request.headers), body, list(request.headers.items()))
        )
        try:
            return await _answer(request, state, behaviour, endpoint, body)
        except asyncio.CancelledError:
            state.cancelled.append(behaviour)
            state.cancel_seen.set()
            raise

    app = web.Application()
    app.router.add_post("/{behaviour}/v1/{endpoint:.+}", handle)
    return app


async def _answer(
    request: web.Request, state: Upstream, behaviour: str, endpoint: str, body: dict[str, Any]
) -> web.StreamResponse:
    model = str(body.get("model"))
    if behaviour.startswith("flaky-"):
        limit = int(behaviour.split("-")[1])
        done = state.flaky_counts.get(behaviour, 0)
        if done < limit:
            state.flaky_counts[behaviour] = done + 1
            return web.json_response(
                {"error": {"message": "busy", "type": "server_error", "code": None}}, status=503
            )
        behaviour = "ok"
    if behaviour.startswith("status-"):
        parts = behaviour.split("-")
        status = int(parts[1])
        if len(parts) > 2:
            return web.Response(status=status, text="upstream says no", headers={"X-Upstream": "yes"})
        return web.json_response(
            {"error": {"message": f"upstream {status}", "type": "upstream", "code": f"u{status}"}},
            status=status,
            headers={"X-Upstream": "yes"},
        )
    if behaviour == "stall":
        state.entered.set()
        await state.stall.wait()
    if behaviour == "echo":
        return web.json_response(
            {"headers": dict(request.headers), "body": body},
            headers={
                "Connection": "close, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Keep-Alive": "timeout=5",
                "X-Kept": "yes",
            },
        )
    if endpoint == "embeddings":
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": model,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        )
    if endpoint == "completions":
        if body.get("stream"):
            return await _stream(request, state, behaviour, body, completions=True)
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "text": " world", "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            }
        )
    if body.get("stream"):
        return await _stream(request, state, behaviour, body)
    if behaviour == "large":  # an answer bigger than the ledger holds for a later usage scan
        return web.json_response(chat_document(model, "x" * 100_000))
    return web.json_response(chat_document(model))


async def _stream(
    request: web.Request, state: Upstream, behaviour: str, body: dict[str, Any], completions: bool = False
) -> web.StreamResponse:
    model = str(body.get("model"))
    include_usage = (body.get("stream_options") or {}).get("include_usage") is True
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    def event(text: str | None, finish: str | None = None) -> bytes:
        if completions:
            chunk = {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}],
            }
            raw = b"data: " + orjson.dumps(chunk) + b"\n\n"
        else:
            raw = chat_chunk(model, text, finish)
        return _with_usage_null(raw) if include_usage else raw

    await response.write(event("Hel"))
    await response.write(event("lo"))
    if behaviour == "stall-mid":
        await state.stall.wait()
    if behaviour == "drop-mid":
        assert request.transport is not None
        request.transport.close()
        return response
    if behaviour == "gate":
        state.entered.set()
        await state.release.wait()
    if behaviour == "trickle":  # a long, healthy stream: gaps well under the idle bound
        for _ in range(8):
            await asyncio.sleep(0.05)
            await response.write(event("."))
    # the last event split across two writes, to exercise reassembly
    last = event(None, "stop")
    await response.write(last[:10])
    await response.write(last[10:])
    if include_usage:
        await response.write(usage_chunk(model))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, **APP_RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    sockets: list[socket.socket] = server.sockets  # type: ignore[attr-defined]
    port = sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Gateway:
    url: str
    admin_url: str
    runtime: ProxyRuntime
    clock: FakeClock

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


def make_backend(
    name: str,
    url: str | None,
    *,
    provider: str = "openai",
    credential: str | None = None,
    first_byte: float = 5.0,
    idle: float = 5.0,
    total: float | None = None,
    max_concurrency: int | None = None,
    queue_timeout: float = 0.0,
    failures: int = 3,
    **extra: Any,
) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "id": f"ns/{name}",
            "namespace": "ns",
            "name": name,
            "provider": provider,
            "url": url,
            "credentialRef": credential,
            "timeouts": {"connect": 2.0, "firstByte": first_byte, "idle": idle, "total": total},
            "maxConcurrency": max_concurrency,
            "queueTimeout": queue_timeout,
            "outlierDetection": {"consecutiveFailures": failures, "baseEjection": 30.0, "maxEjection": 300.0},
            **extra,
        }
    )


def make_route(
    model: str,
    targets: list[tuple[str, int]] | list[tuple[str, int, str]],
    *,
    fallbacks: tuple[str, ...] = (),
    attempts: int = 0,
    retry_on: tuple[str, ...] = ("connect-failure", "5xx", "429"),
    timeout: float | None = None,
    sticky: str | None = None,
) -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "id": f"ns/{model}",
            "namespace": "ns",
            "name": model,
            "model": model,
            "targets": [
                {"backend": f"ns/{t[0]}", "model": t[2] if len(t) > 2 else f"{t[0]}-model", "weight": t[1]}
                for t in targets
            ],
            "fallbacks": [{"backend": f"ns/{f}", "model": f"{f}-model", "weight": 0} for f in fallbacks],
            "retries": {
                "attempts": attempts,
                "retryOn": list(retry_on),
                "backoffBase": 0.001,
                "backoffMax": 0.002,
            },
            "timeout": timeout,
            "stickyHeader": sticky,
        }
    )


def make_config(
    backends: list[BackendConfig],
    routes: list[RouteConfig],
    *,
    max_body_bytes: int = 1_000_000,
    client_keys: tuple[str, ...] = (),
    require_client_key: bool = False,
) -> ProxyConfig:
    return ProxyConfig(
        gateway=GatewayConfig.model_validate(
            {
                "namespace": "ns",
                "name": "gw",
                "maxBodyBytes": max_body_bytes,
                "clientKeyRefs": list(client_keys),
                "requireClientKey": require_client_key or bool(client_keys),
            }
        ),
        backends=tuple(backends),
        routes=tuple(routes),
    ).with_revision()
