"""Provider `openai`: any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp, TGI...).

The backend URL is the base URL an OpenAI SDK takes (`http://vllm:8000/v1`); endpoint paths
are appended once per config, not per request. Only the connect timeout is given to aiohttp
(`sock_connect`); first-byte, idle and total bounds are the caller's `AttemptWatchdog`, so
aiohttp arms no per-read timers. A body not read to its end closes the connection instead of
returning it to the keep-alive pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from yarl import URL

from routeway_proxy.providers import (
    ENDPOINT_PATHS,
    ConnectFailure,
    EndpointKind,
    StreamDropped,
)
from routeway_proxy.upstream_client import UpstreamClient

# Anything aiohttp raises before the response headers means "no answer": refused, reset, DNS,
# connect timeout, a malformed status line, a pooled connection the server had closed.
_CONNECT_ERRORS = (aiohttp.ClientError, OSError)
_READ_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError)


class _HttpReply:
    """One upstream response."""

    __slots__ = ("_content", "_response", "complete", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.complete = False

    def close(self) -> None:
        if self.complete:
            self._response.release()
        else:
            self._response.close()  # a body not read to its end: the connection cannot be reused

    def take_complete_body(self) -> bytes | None:
        content = self._content
        if not content.is_eof():
            return None
        try:
            body = content.read_nowait()
        except _READ_ERRORS as exc:
            raise StreamDropped(type(exc).__name__) from exc
        self.complete = True
        return body

    def at_eof(self) -> bool:
        if self._content.at_eof():
            self.complete = True
            return True
        return False

    async def read_chunk(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except _READ_ERRORS as exc:
            raise StreamDropped(type(exc).__name__) from exc
        if not chunk:
            self.complete = True
        return chunk


class OpenAIProvider:
    """Sends to `<url>/chat/completions` etc. over the process's shared client."""

    def __init__(self, base_url: str, connect_timeout: float) -> None:
        base = str(URL(base_url).with_user(None)).rstrip("/")  # userinfo becomes a header (table.py)
        self.urls: dict[EndpointKind, URL] = {kind: URL(base + path) for kind, path in ENDPOINT_PATHS.items()}
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=connect_timeout
        )

    async def send(
        self,
        client: UpstreamClient,
        kind: EndpointKind,
        body: dict[str, Any],
        payload: bytes,
        headers: Sequence[tuple[str, str]],
    ) -> _HttpReply:
        try:
            response = await client.post(self.urls[kind], payload, headers, self.timeout)
        except _CONNECT_ERRORS as exc:
            raise ConnectFailure(type(exc).__name__) from exc
        return _HttpReply(response)
