"""`UpstreamClient`: its lean path sends and fails exactly as `ClientSession.request()` does.

Both paths run against the same real aiohttp server on 127.0.0.1 and are compared on what the
upstream received and what the caller got back. Which path a process takes, and the fallback
when the installed aiohttp was not compared: test_proxy_fast_paths.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from routeway_proxy.upstream_client import (
    LeanPath,
    UpstreamClient,
    lean_path_problem,
    load_lean_path,
    open_client_session,
)
from yarl import URL

TIMEOUTS = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=5)
PAYLOAD = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def request_headers() -> tuple[tuple[str, str], ...]:
    """In the form the gateway passes (pairs, see `upstream_header_pairs`)."""
    return (
        ("Content-Type", "application/json"),
        ("Accept-Encoding", "identity"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Repeated", "a"),
        ("X-Repeated", "b"),
    )


class Upstream:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.url = ""


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        state.seen.append(
            {
                "method": request.method,
                "path_qs": request.path_qs,
                "headers": list(request.headers.items()),
                "body": body,
                "peer": peer,
            }
        )
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if request.path == "/hang-up":
            assert transport is not None
            transport.close()
            return web.Response()
        return web.json_response({"ok": True}, headers={"X-Upstream": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def lean_path() -> LeanPath:
    found = load_lean_path()
    assert isinstance(found, LeanPath), found
    return found


@pytest.fixture(params=["lean", "session"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    """A client on each path, whatever this process chose (ROUTEWAY_FAST_PATHS)."""
    session = open_client_session()
    client = UpstreamClient(session, lean_path=lean_path() if request.param == "lean" else None)
    assert client.lean == (request.param == "lean")
    yield client
    await session.close()


async def test_the_installed_aiohttp_takes_the_lean_path() -> None:
    """Fails when an aiohttp upgrade is not one the lean path was compared with or changes the
    layers it calls: compare it with `ClientSession._request`, then add the release to
    `COMPARED_AIOHTTP` (until then the proxy still works, through `request()`)."""
    async with open_client_session() as session:
        assert lean_path_problem(session) is None
        assert UpstreamClient(session, lean_path=lean_path()).lean


async def test_a_session_with_features_it_would_skip_is_refused() -> None:
    async with aiohttp.ClientSession() as session:  # a cookie jar
        assert lean_path_problem(session) == "the session keeps cookies"
        assert not UpstreamClient(session, lean_path=lean_path()).lean
    async with aiohttp.ClientSession(
        headers={"X-Default": "1"}, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        assert (
            lean_path_problem(session) == "the session sets default_headers, which the lean path would ignore"
        )


async def send(client: UpstreamClient, url: str) -> tuple[int, list[tuple[str, str]], bytes]:
    response = await client.post(URL(url), PAYLOAD, request_headers(), TIMEOUTS)
    try:
        body = await response.read()
    finally:
        response.release()
    headers = [(k, v) for k, v in response.headers.items() if k not in ("Date",)]
    return response.status, headers, body


async def test_both_paths_send_and_receive_the_same(upstream: Upstream) -> None:
    answers = []
    for lean in (lean_path(), None):
        async with open_client_session() as session:
            client = UpstreamClient(session, lean_path=lean)
            assert client.lean == (lean is not None)
            answers.append(await send(client, upstream.url + "/v1/chat/completions?x=1"))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200 and answers[0][2] == b'{"ok": true}'
    lean_seen, session_seen = upstream.seen
    for key in ("method", "path_qs", "headers", "body"):
        assert lean_seen[key] == session_seen[key], key
    assert lean_seen["method"] == "POST" and lean_seen["body"] == PAYLOAD
    assert ("X-Repeated", "a") in lean_seen["headers"] and ("X-Repeated", "b") in lean_seen["headers"]


async def test_a_multidict_of_headers_is_sent_as_the_same_pairs(upstream: Upstream) -> None:
    async with open_client_session() as session:
        client = UpstreamClient(session, lean_path=lean_path())
        await client.post(URL(upstream.url + "/a"), PAYLOAD, request_headers(), TIMEOUTS)
        await client.post(URL(upstream.url + "/b"), PAYLOAD, CIMultiDict(request_headers()), TIMEOUTS)
    as_pairs, as_multidict = upstream.seen
    assert as_pairs["headers"] == as_multidict["headers"]


async def test_connections_are_kept_alive_and_reused(client: UpstreamClient, upstream: Upstream) -> None:
    for _ in range(3):
        assert (await send(client, upstream.url + "/v1/embeddings"))[0] == 200
    assert len({seen["peer"] for seen in upstream.seen}) == 1


async def test_redirects_come_back_unfollowed(client: UpstreamClient, upstream: Upstream) -> None:
    status, headers, _ = await send(client, upstream.url + "/redirect")
    assert status == 302 and ("Location", "/elsewhere") in headers
    assert [seen["path_qs"] for seen in upstream.seen] == ["/redirect"]


async def test_a_refused_connection_raises_a_connector_error(client: UpstreamClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.post(URL(f"http://127.0.0.1:{port}/v1/x"), PAYLOAD, request_headers(), TIMEOUTS)


async def test_a_server_that_hangs_up_raises_and_the_pool_recovers(
    client: UpstreamClient, upstream: Upstream
) -> None:
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(URL(upstream.url + "/hang-up"), PAYLOAD, request_headers(), TIMEOUTS)
    assert held_connections(client) == (0, 0)
    assert (await send(client, upstream.url + "/v1/chat/completions"))[0] == 200
    assert held_connections(client) == (1, 0)  # answered and released to the pool


def held_connections(client: UpstreamClient) -> tuple[int, int]:
    """(pooled idle, acquired) connections of the client's connector."""
    connector = client.session.connector
    assert connector is not None
    pooled = sum(len(idle) for idle in getattr(connector, "_conns").values())  # noqa: B009
    return pooled, len(getattr(connector, "_acquired"))  # noqa: B009


class SilentServer:
    """A TCP port that accepts connections and never says a word (a TLS handshake hangs)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = asyncio.Event()
        self.held: list[asyncio.StreamWriter] = []

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)
        self.accepted.set()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    silent = SilentServer()
    server = await asyncio.start_server(silent.accept, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    yield silent
    for writer in silent.held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_connect_timeout_raises_connection_timeout_error(
    client: UpstreamClient, silent_server: SilentServer
) -> None:
    timeouts = aiohttp.ClientTimeout(total=None, sock_connect=0.2)
    url = URL(f"https://127.0.0.1:{silent_server.port}/v1/x")
    with pytest.raises(aiohttp.ConnectionTimeoutError):
        await asyncio.wait_for(client.post(url, PAYLOAD, request_headers(), timeouts), 30)
    assert held_connections(client) == (0, 0)


async def test_a_call_cancelled_while_connecting_holds_nothing(
    client: UpstreamClient, silent_server: SilentServer
) -> None:
    url = URL(f"https://127.0.0.1:{silent_server.port}/v1/x")
    call = asyncio.create_task(client.post(url, PAYLOAD, request_headers(), TIMEOUTS))
    await silent_server.accepted.wait()  # connected, the TLS handshake pending
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert held_connections(client) == (0, 0)


async def test_a_total_bound_is_honoured(client: UpstreamClient, silent_server: SilentServer) -> None:
    """The lean path has no total timer of its own: a `total` goes through the session."""
    timeouts = aiohttp.ClientTimeout(total=0.2, sock_connect=30)
    url = URL(f"http://127.0.0.1:{silent_server.port}/v1/x")  # connects, then never answers
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.post(url, PAYLOAD, request_headers(), timeouts), 30)


async def test_a_closed_session_refuses_without_connecting(
    client: UpstreamClient, upstream: Upstream
) -> None:
    await client.session.close()
    with pytest.raises(RuntimeError, match="Session is closed"):
        await client.post(URL(upstream.url + "/v1/x"), PAYLOAD, request_headers(), TIMEOUTS)
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"proxy": "http://127.0.0.1:1"}, "default_proxy"),
        ({"skip_auto_headers": ["User-Agent"]}, "skip_auto_headers"),
        ({"raise_for_status": True}, "raise_for_status"),
        ({"base_url": "http://127.0.0.1:1"}, "base_url"),
        ({"trace_configs": [aiohttp.TraceConfig()]}, "trace_configs"),
        ({"version": aiohttp.HttpVersion10}, "HTTP/1.1"),
        ({"trust_env": True}, "environment"),
    ],
)
async def test_sessions_with_features_the_lean_path_skips_are_refused(
    options: dict[str, Any], problem: str
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **options) as session:
        found = lean_path_problem(session)
        assert found is not None and problem in found, found


async def test_a_cancelled_call_leaves_no_connection_behind(client: UpstreamClient) -> None:
    """Cancelled while waiting for the answer (the watchdog's or a client's cancellation):
    the half-used connection is closed, not returned to the pool."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = URL(f"http://127.0.0.1:{runner.addresses[0][1]}/slow")
        call = asyncio.create_task(client.post(url, PAYLOAD, request_headers(), TIMEOUTS))
        await entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert held_connections(client) == (0, 0)  # closed: neither pooled nor held
    finally:
        release.set()
        await runner.cleanup()
