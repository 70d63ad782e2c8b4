"""The client port's listener: aiohttp's `web.BaseSite` with `ClientConnection` as its protocol.

Why a site of its own: aiohttp's `TCPSite` always serves the runner's `web.Server` protocol;
the connection layer (client_conn.py) needs its own protocol class. Being a `web.BaseSite`,
it is stopped by `AppRunner.cleanup()` (the drain) like any other site: the listener closes
first, then aiohttp closes idle connections and waits for requests in flight, while the sweep
of `ClientConnections` goes on until the last connection is gone.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from routeway_proxy.client_conn import ClientConnection
from routeway_proxy.client_registry import ClientConnections

__all__ = ["ClientSite", "start_client_site"]


class ClientSite(web.BaseSite):
    """A TCP listener whose connections are `ClientConnection`s of one `ClientConnections`."""

    __slots__ = (
        "_client_backlog",
        "_client_runner",
        "_handler_options",
        "_host",
        "_listener",
        "_port",
        "_registry",
        "_reuse_port",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        registry: ClientConnections,
        host: str,
        port: int,
        *,
        backlog: int,
        reuse_port: bool = False,
        handler_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._client_runner = runner
        self._client_backlog = backlog
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._registry = registry
        self._handler_options = handler_options or {}
        self._listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._listener is not None and self._listener.sockets:
            return int(self._listener.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._client_runner.server
        assert isinstance(server, web.Server)
        loop = asyncio.get_running_loop()
        registry = self._registry
        # aiohttp's own keep-alive timer (from the accept and after each answer, not re-armed by
        # bytes) would close a connection whose headers are under way without the 408: the
        # sweep keeps the idle timeout, aiohttp's stays at its long default as a backstop.
        options = {"loop": loop, "access_log": None, **self._handler_options}

        def make_connection() -> ClientConnection:
            return ClientConnection(server, registry, **options)

        self._listener = await loop.create_server(
            make_connection,
            self._host,
            self._port,
            backlog=self._client_backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            family=socket.AF_UNSPEC,
        )
        registry.start(loop)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._registry.stop()
        await super().stop()


async def start_client_site(
    runner: web.BaseRunner,
    registry: ClientConnections,
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
) -> ClientSite:
    """Listen for clients on `runner`'s app (after `runner.setup()`); raises OSError."""
    site = ClientSite(runner, registry, host, port, backlog=backlog, reuse_port=reuse_port)
    await site.start()
    return site
