"""The yardstick: what plain aiohttp can do as a reverse proxy, in about sixty lines.

One shared ClientSession (keep-alive pool), the body read once, streamed replies relayed
chunk by chunk, SO_REUSEPORT workers. No routing, metrics or error shaping: Routeway is
measured against this to see what its features cost.

Run: python bench/yardstick_proxy.py --port N --upstream http://127.0.0.1:M [--workers K]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
}
SESSION = web.AppKey("session", aiohttp.ClientSession)
CLIENT = web.AppKey("client", object)
TIMEOUTS = aiohttp.ClientTimeout(total=None, sock_connect=10)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    url = request.app[UPSTREAM] + request.path_qs
    body = await request.read()
    async with request.app[SESSION].request(
        request.method, url, data=body, headers=headers, allow_redirects=False
    ) as upstream:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if not upstream.content_type.startswith("text/event-stream"):
            return web.Response(status=upstream.status, headers=out_headers, body=await upstream.read())
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def forward_lean(request: web.Request) -> web.StreamResponse:
    """--lean (calibration, not the yardstick): `forward` sent with Routeway's transport."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    body = await request.read()
    upstream = await request.app[CLIENT].post(
        URL(request.app[UPSTREAM] + request.path_qs), body, headers, TIMEOUTS
    )
    try:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if not upstream.content_type.startswith("text/event-stream"):
            return web.Response(status=upstream.status, headers=out_headers, body=await upstream.read())
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()


async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    yield
    await app[SESSION].close()


async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    from routeway_proxy.upstream_client import UpstreamClient, open_client_session

    app[CLIENT] = client = UpstreamClient(open_client_session())
    assert client.lean
    yield
    await client.session.close()


async def serve(host: str, port: int, upstream: str, lean: bool) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_ctx if lean else session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward_lean if lean else forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=4096).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal aiohttp reverse proxy (benchmark yardstick)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--lean", action="store_true", help="send with Routeway's UpstreamClient")
    args = parser.parse_args()
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()  # before any event loop exists; each worker binds with SO_REUSEPORT
        if pid == 0:
            children = []
            break
        children.append(pid)
    import uvloop

    uvloop.run(serve(args.host, args.port, args.upstream, args.lean))
    for child in children:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
