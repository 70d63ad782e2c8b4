"""`routeway mock-backend`: the simulated model as a standalone OpenAI-compatible server.

Why: tests and benchmarks need a real upstream process on a real socket (the `mock` provider
runs inside the gateway, so it exercises no network path). Same `mock_reply` as the provider,
so a demo behaves the same whether the model is in-process or across a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import orjson
from aiohttp import web

from routeway.durations import parse_duration
from routeway.proxyconfig import MockBehaviour
from routeway_proxy.mock_model import MockKind, MockReply, mock_reply, render_error

BEHAVIOUR_KEY = web.AppKey("behaviour", MockBehaviour)
MODEL_NAME_KEY = web.AppKey("model_name", str)
DEFAULT_MODEL = "mock"
MAX_BODY_BYTES = 16 * 1024 * 1024

_ROUTES: dict[str, MockKind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def create_mock_app(behaviour: MockBehaviour, model_name: str = "") -> web.Application:
    """The OpenAI-compatible app; `model_name` overrides the model echoed from requests."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[BEHAVIOUR_KEY] = behaviour
    app[MODEL_NAME_KEY] = model_name
    for path, kind in _ROUTES.items():
        app.router.add_post(path, _make_handler(kind))
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/healthz", _healthz)
    return app


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mock-backend` to the `routeway` command line."""
    parser = subparsers.add_parser(
        "mock-backend",
        help="run the simulated model as a standalone OpenAI-compatible server",
        description="Serve the simulated model (chat, completions, embeddings, streaming) on HTTP.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed at start)")
    parser.add_argument(
        "--latency", type=parse_duration, default=0.0, help="wait before a non-streamed reply"
    )
    parser.add_argument(
        "--time-to-first-token", type=parse_duration, default=0.0, help="wait before the first streamed token"
    )
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="stream pacing (0 = no pacing)")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered with 500"
    )
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens when the request sets no limit")
    parser.add_argument(
        "--model-name", default="", help="model name in responses (default: echo the request's)"
    )
    parser.add_argument(
        "--reuse-port", action="store_true", help="bind with SO_REUSEPORT so several processes share the port"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; exit 0."""
    try:
        behaviour = MockBehaviour.model_validate(
            {
                "latency": args.latency,
                "timeToFirstToken": args.time_to_first_token,
                "tokensPerSecond": args.tokens_per_second,
                "errorRate": args.error_rate,
                "maxTokens": args.max_tokens,
            }
        )
    except ValueError as exc:
        print(f"routeway mock-backend: {exc}", file=sys.stderr)
        return 2
    app = create_mock_app(behaviour, args.model_name)
    coroutine = _serve(app, args.host, args.port, args.reuse_port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    return 0


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
        await site.start()
        for address in runner.addresses:
            print(f"routeway mock-backend listening on http://{address[0]}:{address[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _make_handler(kind: MockKind) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "The request body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", "invalid_value")
        model = request.app[MODEL_NAME_KEY] or body.get("model") or DEFAULT_MODEL
        if not isinstance(model, str):
            return _error(400, "'model' must be a string.", "invalid_value")
        reply = await mock_reply(kind, body, model, request.app[BEHAVIOUR_KEY])
        return await _send(request, reply)

    return handle


async def _send(request: web.Request, reply: MockReply) -> web.StreamResponse:
    """Headers go out with the first body bytes, as from a real model server."""
    chunks = reply.body
    first = await anext(chunks, b"")
    if not reply.headers.get("Content-Type", "").startswith("text/event-stream"):
        rest = [chunk async for chunk in chunks]
        return web.Response(status=reply.status, headers=reply.headers, body=b"".join([first, *rest]))
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away: a model server just stops generating
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
    return response


async def _list_models(request: web.Request) -> web.Response:
    name = request.app[MODEL_NAME_KEY] or DEFAULT_MODEL
    document = {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": int(time.time()), "owned_by": "routeway-mock"}],
    }
    return web.Response(body=orjson.dumps(document), content_type="application/json")


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _error(status: int, message: str, code: str) -> web.Response:
    return web.Response(
        status=status,
        body=render_error(message, "invalid_request_error", code),
        content_type="application/json",
    )
