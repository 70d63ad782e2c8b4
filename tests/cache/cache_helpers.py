"""Helpers of the response-cache tests: a settable clock, answers captured from the repo's
simulated model (`routeway_proxy.mock_model`, the provider `mock`), bodies as a client sends."""

from __future__ import annotations

from typing import Any

import orjson
from routeway_proxy.cache.key import CacheKind
from routeway_proxy.mock_model import mock_reply

from routeway.proxyconfig import MockBehaviour


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_body(text: str = "hello cache world", **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}


async def capture_mock(kind: CacheKind, body: dict[str, Any], max_tokens: int = 8) -> tuple[int, bytes]:
    """Status and the complete body bytes the mock provider answers (SSE when streaming)."""
    reply = await mock_reply(kind, body, body.get("model", "m"), MockBehaviour(maxTokens=max_tokens))
    parts = [part async for part in reply.body]
    return reply.status, b"".join(parts)


def sse_events(stream: bytes) -> list[Any]:
    """The data of every event of an SSE body: parsed JSON, or the text `[DONE]`."""
    out: list[Any] = []
    for event in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
        if not lines:
            continue
        data = b"\n".join(lines)
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out
