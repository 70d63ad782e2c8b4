"""Provider `mock`: the simulated model of `mock_model.py`, answered inside the gateway.

Why an adapter and not a shortcut: a `mock` backend goes through the same request path as a
real upstream — routing, concurrency limits, timeouts (the mock's latency counts against
first-byte and idle bounds), retries on its `errorRate` failures, passive health, metrics —
so demos and tests show what the gateway does with a slow or failing model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from routeway.proxyconfig import MockBehaviour
from routeway_proxy.mock_model import MockReply, mock_reply
from routeway_proxy.providers import EndpointKind, UpstreamReply

if TYPE_CHECKING:
    from routeway_proxy.upstream_client import UpstreamClient


class _MockReply:
    __slots__ = ("_body", "_reply")

    def __init__(self, reply: MockReply) -> None:
        self._reply = reply
        self._body = reply.body

    @property
    def status(self) -> int:
        return self._reply.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._reply.headers

    async def read_chunk(self) -> bytes:
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            return b""

    def at_eof(self) -> bool:
        return False

    def take_complete_body(self) -> bytes | None:
        return None  # the simulated model produces its body over time

    def close(self) -> Awaitable[None] | None:
        close = getattr(self._body, "aclose", None)
        return close() if close is not None else None


class MockProvider:
    def __init__(self, behaviour: MockBehaviour | None) -> None:
        self._behaviour = behaviour or MockBehaviour()

    async def send(
        self,
        client: UpstreamClient,
        kind: EndpointKind,
        body: dict[str, Any],
        payload: bytes,
        headers: Sequence[tuple[str, str]],
    ) -> UpstreamReply:
        return _MockReply(await mock_reply(kind, body, str(body.get("model", "")), self._behaviour))
