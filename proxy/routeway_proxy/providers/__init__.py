"""How the gateway talks to one kind of backend: the `Provider` protocol and its errors.

Why a protocol: the request path (routing, retries, timeouts, metrics, health) is the same
whether the answer comes over HTTP from an OpenAI-compatible server or from the simulated
model in this process; a provider only turns one request into an `UpstreamReply`
(status, headers, then body chunks) and normalises its failures into `ConnectFailure`
(nothing was answered) and `StreamDropped` (the answer broke off).

Why `send` + `close` and not an async context manager: entering and leaving one costs two
coroutines per request on the hot path; the caller closes the reply in a `finally` instead.

Provider translation (Anthropic, Azure) will be one module per provider here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from routeway_proxy.upstream_client import UpstreamClient

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

    def take_complete_body(self) -> bytes | None:
        """The whole body if it has already arrived, without awaiting; else None (read it with
        `read_chunk`). A small JSON answer usually arrives with its headers."""
        ...

    def close(self) -> Awaitable[None] | None:
        """Free the reply (a connection goes back to the pool only if its body was read to
        the end); what it returns, if anything, must be awaited."""
        ...


class Provider(Protocol):
    async def send(
        self,
        client: UpstreamClient,
        kind: EndpointKind,
        body: dict[str, Any],
        payload: bytes,
        headers: Sequence[tuple[str, str]],
    ) -> UpstreamReply:
        """Send the request — `body` as sent upstream (model already rewritten), `payload` its
        serialisation — and return once the answer's headers arrived (raises `ConnectFailure`);
        the caller must `close()` the reply. The parts come as arguments rather than one object:
        this runs for every request, and building the object cost more than passing them."""
        ...
