"""Provider `openai`: any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp, TGI...).

The backend URL is the base URL an OpenAI SDK takes (`http://vllm:8000/v1`); endpoint paths
are appended once per config, not per request. Only the connect timeout is given to aiohttp
(`sock_connect`); first-byte, idle and total bounds are the caller's `AttemptWatchdog`, so
aiohttp arms no per-read timers. A body not read to its end closes the connection instead of
returning it to the keep-alive pool.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from routeway.proxy.providers import (
    ENDPOINT_PATHS,
    ConnectFailure,
    EndpointKind,
    StreamDropped,
    UpstreamCall,
)
from yarl import URL

# Anything aiohttp raises before the response headers means "no answer": refused, reset, DNS,
# connect timeout, a malformed status line, a pooled connection the server had closed.
_CONNECT_ERRORS = (aiohttp.ClientError, OSError)


class _HttpExchange:
    """One request/response; an async context manager written out by hand (no generator)
    because it is entered once per request on the hot path."""

    __slots__ = ("_call", "_content", "_provider", "_response", "_session", "complete")

    def __init__(self, provider: OpenAIProvider, session: aiohttp.ClientSession, call: UpstreamCall) -> None:
        self._provider = provider
        self._session = session
        self._call = call
        self._response: aiohttp.ClientResponse | None = None
        self.complete = False

    async def __aenter__(self) -> _HttpExchange:
        call = self._call
        provider = self._provider
        try:
            response = await self._session.request(
                "POST",
                provider.urls[call.kind],
                data=call.payload,
                headers=call.headers,
                allow_redirects=False,
                timeout=provider.timeout,
            )
        except _CONNECT_ERRORS as exc:
            raise ConnectFailure(type(exc).__name__) from exc
        self._response = response
        self._content = response.content
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        response = self._response
        if response is None:
            return
        if self.complete:
            response.release()
        else:
            response.close()  # a body not read to its end: the connection cannot be reused

    @property
    def status(self) -> int:
        assert self._response is not None
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        assert self._response is not None
        return self._response.headers

    def at_eof(self) -> bool:
        if self._content.at_eof():
            self.complete = True
            return True
        return False

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
        base = str(URL(base_url).with_user(None)).rstrip("/")  # userinfo becomes a header (table.py)
        self.urls: dict[EndpointKind, URL] = {kind: URL(base + path) for kind, path in ENDPOINT_PATHS.items()}
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=connect_timeout
        )

    def open(self, session: aiohttp.ClientSession, call: UpstreamCall) -> _HttpExchange:
        return _HttpExchange(self, session, call)
