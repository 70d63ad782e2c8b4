"""How the gateway talks to one kind of backend: the `Provider` protocol and its errors.

Why a protocol: the request path (routing, retries, timeouts, metrics, health) is the same
whether the answer comes over HTTP from an OpenAI-compatible server or from the simulated
model in this process; a provider only turns one `UpstreamCall` into an `UpstreamReply`
(status, headers, then body chunks) and normalises its failures into `ConnectFailure`
(nothing was answered) and `StreamDropped` (the answer broke off).

Provider translation (Anthropic, Azure) will be one module per provider here.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
from multidict import CIMultiDict

EndpointKind = Literal["chat", "completions", "embeddings"]

ENDPOINT_PATHS: Mapping[EndpointKind, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


class ConnectFailure(Exception):
    """No answer: connection refused or timed out, DNS failure, connection closed early."""


class StreamDropped(Exception):
    """The upstream closed or broke the connection in the middle of the body."""


@dataclass(slots=True)
class UpstreamCall:
    kind: EndpointKind
    body: dict[str, Any]  # the request as sent upstream (model already rewritten)
    payload: bytes  # `body` serialised
    headers: CIMultiDict[str]


class UpstreamReply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read_chunk(self) -> bytes:
        """The next body bytes as they arrive; b"" at the end. Raises `StreamDropped`."""
        ...

    def at_eof(self) -> bool:
        """True when the whole body was read (saves one `read_chunk` call per answer)."""
        ...


class Provider(Protocol):
    def open(
        self, session: aiohttp.ClientSession, call: UpstreamCall
    ) -> AbstractAsyncContextManager[UpstreamReply]:
        """Send `call`; enter once headers arrived (raises `ConnectFailure`); exit frees it."""
        ...
