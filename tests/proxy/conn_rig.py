"""The gateway served through its connection layer (client_conn.py), and raw-socket helpers.

The raw tests speak HTTP/1.1 by hand over asyncio streams on 127.0.0.1, because what they
check (trickled bytes, half-close, pipelining, malformed framing) is below what an HTTP client
library lets one send. Waits are bounded (`WAIT`) and never asserted as durations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from proxy_helpers import Upstream, make_backend, make_config, make_route
from routeway_proxy.app import APP_RUNNER_OPTIONS, create_proxy_app
from routeway_proxy.client_conn import ClientConnections, ConnectionLimits
from routeway_proxy.client_site import start_client_site
from routeway_proxy.metrics import ProxyMetrics
from routeway_proxy.runtime import ProxyRuntime

WAIT = 10.0
"""Generous bound on any wait for an event (a close, an answer)."""


@dataclass
class ConnGateway:
    host: str
    port: int
    runtime: ProxyRuntime
    connections: ClientConnections
    metrics: ProxyMetrics

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    def closed(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "routeway_client_connections_closed_total", {"reason": reason}
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def conn_gateway(limits: ConnectionLimits, **runner_options: Any) -> AsyncIterator[ConnGateway]:
    runtime = ProxyRuntime()
    metrics = runtime.metrics
    connections = ClientConnections(limits, metrics)
    runner = web.AppRunner(create_proxy_app(runtime), **{**APP_RUNNER_OPTIONS, **runner_options})
    await runner.setup()
    site = await start_client_site(runner, connections, "127.0.0.1", 0)
    try:
        yield ConnGateway("127.0.0.1", site.port, runtime, connections, metrics)
    finally:
        await runner.cleanup()


def request_bytes(
    path: str = "/v1/models", *, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        document = orjson.loads(self.body)
        assert isinstance(document, dict)
        error = document["error"]
        assert set(error) == {"message", "type", "param", "code"}, document
        assert isinstance(error, dict)
        return error


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 answer (Content-Length or chunked), within `WAIT`."""
    return await asyncio.wait_for(_read_answer(reader), WAIT)


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        if status != 100:
            break
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        return Answer(status, headers, b"".join(parts))
    length = int(headers.get("content-length", "0"))
    return Answer(status, headers, await reader.readexactly(length))


async def closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    """Everything until the gateway closes the connection (within `WAIT`)."""
    return await asyncio.wait_for(reader.read(), WAIT)


SHORT = ConnectionLimits(header_timeout=0.4, body_timeout=0.4, idle_timeout=0.4, max_per_worker=64)


def serve_ok(gateway: ConnGateway, upstream: Upstream, behaviour: str = "ok", **backend_options: Any) -> None:
    backend = make_backend("a", upstream.base(behaviour), **backend_options)
    gateway.runtime.apply(make_config([backend], [make_route("gpt", [("a", 1)])]), {})


def chat(stream: bool = False) -> bytes:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return orjson.dumps(body)


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` on every turn of the loop until it holds (within `WAIT`)."""
    async with asyncio.timeout(WAIT):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


@dataclass
class HeldUpstream:
    """An OpenAI upstream that answers a chat request only once `release` is set (nothing at all
    before), so a test controls when the answer begins."""

    url: str
    entered: asyncio.Event
    release: asyncio.Event


@contextlib.asynccontextmanager
async def held_upstream() -> AsyncIterator[HeldUpstream]:
    entered, release = asyncio.Event(), asyncio.Event()

    async def chat_completion(request: web.Request) -> web.Response:
        body = await request.json()
        entered.set()
        await release.wait()
        message = {"role": "assistant", "content": "held answer"}
        return web.json_response(
            {
                "id": "chatcmpl-held",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completion)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield HeldUpstream(f"http://127.0.0.1:{port}/v1", entered, release)
    finally:
        release.set()
        await runner.cleanup()
