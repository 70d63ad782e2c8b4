"""The real proxy reader (`HttpProxyReader`, the seam the rollout tests replace) against admin
servers on loopback: a report and a revision read; a proxy without /observations still gives
its revision; a malformed report is no report; a pod that does not answer is None; a pod not
ready (503) is None; a client usage report read, a malformed, missing or failing /usage is None.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from routeway_operator.proxies import HttpProxyReader, ProxyPod

from routeway.rollout.observations import ArmObservation, Histogram, Report, report_to_json

REPORT = Report(
    "gw-abc",
    1700000000.0,
    {
        ("default/chat", "aaaa"): ArmObservation(
            success=7, server_error=1, latency=Histogram((0.1, 1.0), (3, 4, 0))
        )
    },
)


@asynccontextmanager
async def admin(routes: dict[str, Callable[[], web.Response]]) -> AsyncIterator[int]:
    app = web.Application()
    for path, answer in routes.items():

        async def handler(_: web.Request, answer: Callable[[], web.Response] = answer) -> web.Response:
            return answer()

        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def json_answer(doc: Any, status: int = 200) -> Callable[[], web.Response]:
    return lambda: web.json_response(doc, status=status)


async def test_reads_the_report_and_the_revision() -> None:
    routes = {
        "/readyz": json_answer({"status": "ready", "revision": "rev-1"}),
        "/observations": json_answer(report_to_json(REPORT)),
    }
    reader = HttpProxyReader()
    async with admin(routes) as port:
        read = await reader.read(ProxyPod("p", "127.0.0.1", port))
    await reader.close()
    assert read is not None and read.revision == "rev-1" and read.report == REPORT


async def test_a_proxy_without_observations_still_gives_its_revision() -> None:
    reader = HttpProxyReader()
    async with admin({"/readyz": json_answer({"status": "ready", "revision": "rev-2"})}) as port:
        missing = await reader.read(ProxyPod("p", "127.0.0.1", port))
    routes = {
        "/readyz": json_answer({"status": "ready", "revision": "rev-3"}),
        "/observations": json_answer({"schema": 99}),
    }
    async with admin(routes) as port:
        malformed = await reader.read(ProxyPod("p", "127.0.0.1", port))
    await reader.close()
    assert missing is not None and missing.report is None and missing.revision == "rev-2"
    assert malformed is not None and malformed.report is None and malformed.revision == "rev-3"


async def test_an_unreachable_or_unready_pod_is_none() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    reader = HttpProxyReader(timeout=1.0)
    assert await reader.read(ProxyPod("gone", "127.0.0.1", closed)) is None
    async with admin({"/readyz": json_answer({"status": "not ready"}, status=503)}) as port:
        assert await reader.read(ProxyPod("starting", "127.0.0.1", port)) is None
    await reader.close()


USAGE = {
    "clients": [
        {
            "client": "default/search-team",
            "minute": {
                "start": 1_700_000_040,
                "requests": 2,
                "promptTokens": 10,
                "completionTokens": 5,
                "cost": 0.5,
            },
            "day": None,
            "currency": "USD",
        }
    ]
}


async def test_reads_usage_and_skips_what_is_not_a_usage_report() -> None:
    reader = HttpProxyReader()
    async with admin({"/usage": json_answer(USAGE)}) as port:
        usage = await reader.read_usage(ProxyPod("p", "127.0.0.1", port))
    async with admin({"/usage": json_answer({"clients": [{"client": 1}]})}) as port:
        malformed = await reader.read_usage(ProxyPod("p", "127.0.0.1", port))
    async with admin({}) as port:
        missing = await reader.read_usage(ProxyPod("p", "127.0.0.1", port))
    async with admin({"/usage": json_answer({}, status=500)}) as port:
        failing = await reader.read_usage(ProxyPod("p", "127.0.0.1", port))
    await reader.close()
    assert usage is not None
    minute = usage["default/search-team"].minute
    assert minute is not None and (minute.requests, minute.prompt_tokens, str(minute.cost)) == (2, 10, "0.5")
    assert malformed is None and missing is None and failing is None
