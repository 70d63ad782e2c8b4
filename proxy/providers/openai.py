"""Provider `openai`: any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp, TGI...).

The backend URL is the base URL an OpenAI SDK takes (`http://vllm:8000/v1`); endpoint paths
are appended once per config, not per request. Only the connect timeout is given to aiohttp
(`sock_connect`); first-byte, idle and total bounds are the caller's `AttemptWatchdog`, so
aiohttp arms no per-read timers. A body not read to its end closes the connection instead of
returning it to the keep-alive pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from routeway.proxy.providers import (
    ENDPOINT_PATHS,
    ConnectFailure,
    EndpointKind,
    StreamDropped,
    UpstreamCall,
    UpstreamReply,
)
from yarl import URL

_CONNECT_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientResponseError,
    aiohttp.ClientPayloadError,
    aiohttp.InvalidURL,
    ConnectionError,
)


class _HttpReply:
    __slots__ = ("_content", "_response", "complete")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.complete = False

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read_chunk(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise StreamDropped(type(exc).__name__) from exc
        if not chunk:
            self.complete = True
        return chunk


class OpenAIProvider:
    """Sends to `<url>/chat/completions` etc. over the process's shared session."""

    def __init__(self, base_url: str, connect_timeout: float) -> None:
        base = base_url.rstrip("/")
        self._urls: dict[EndpointKind, URL] = {
            kind: URL(base + path) for kind, path in ENDPOINT_PATHS.items()
        }
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=connect_timeout
        )

    @asynccontextmanager
    async def open(self, session: aiohttp.ClientSession, call: UpstreamCall) -> AsyncIterator[UpstreamReply]:
        try:
            response = await session.request(
                "POST",
                self._urls[call.kind],
                data=call.payload,
                headers=call.headers,
                allow_redirects=False,
                timeout=self._timeout,
            )
        except _CONNECT_ERRORS as exc:
            raise ConnectFailure(type(exc).__name__) from exc
        reply = _HttpReply(response)
        try:
            yield reply
        finally:
            if reply.complete:
                response.release()
            else:
                response.close()
