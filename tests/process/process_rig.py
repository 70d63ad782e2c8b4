"""Helpers of the process tests: real `routeway` processes on loopback, a real upstream.

Each test starts the real command as a subprocess (its log goes to a file in tmp_path and is
shown when an assertion fails), talks to it over HTTP, and signals it like Kubernetes would.
The upstream is an aiohttp app in the test's own event loop that records what it received,
checks the Authorization header, and can hold a stream open until the test releases it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

STARTUP_DEADLINE = 30.0  # seconds: a cold interpreter on a busy 2-core machine
CHANGE_DEADLINE = 10.0  # seconds: generous bound for "live within a second"


def routeway_command() -> list[str]:
    return [sys.executable, "-m", "routeway.cli"]


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = CHANGE_DEADLINE, what: str = ""
) -> Any:
    """Poll `check` until it returns a truthy value; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what} (last: {last!r})")


# --- the upstream -----------------------------------------------------------------------


@dataclass
class Upstream:
    url: str = ""  # base URL as an OpenAI SDK takes it: http://127.0.0.1:N/v1
    expected_key: str | None = None  # when set, anything else gets 401
    seen: list[dict[str, Any]] = field(default_factory=list)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)
    release_stream: asyncio.Event = field(default_factory=asyncio.Event)


UPSTREAM = web.AppKey("upstream", Upstream)


def sse(data: dict[str, Any] | str) -> bytes:
    body = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"data: {body}\n\n".encode()


def chunk(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


async def chat_handler(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    body = await request.json()
    auth = request.headers.get("Authorization")
    upstream.seen.append({"model": body.get("model"), "authorization": auth})
    if upstream.expected_key is not None and auth != f"Bearer {upstream.expected_key}":
        return web.json_response(
            {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}},
            status=401,
        )
    model = body["model"]
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(sse(chunk(model, "first ")))
    upstream.stream_started.set()
    await upstream.release_stream.wait()  # the test decides when the stream may go on
    for word in ("second ", "third"):
        await response.write(sse(chunk(model, word)))
    await response.write(sse("[DONE]"))
    await response.write_eof()
    return response


# --- manifests --------------------------------------------------------------------------


def manifest(
    upstream_url: str, *, model: str = "model-a", public: str = "chat", key: str | None = None
) -> str:
    """A backend on the test upstream and a route to it; with `key`, a Secret holding it."""
    secret_ref = "  apiKeySecretRef: {name: upstream-key, key: api-key}\n" if key else ""
    text = f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: upstream, namespace: default}}
spec:
  provider: openai
  url: {upstream_url}
  model: {model}
{secret_ref}---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: {public}, namespace: default}}
spec:
  model: {public}
  backends: [{{name: upstream}}]
"""
    if key:
        text += f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: default}}
stringData: {{api-key: {key}}}
"""
    return text


def write_atomically(path: Path, text: str) -> None:
    """Save like an editor that writes a temporary file and renames it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the routeway process ---------------------------------------------------------------


@dataclass
class Routeway:
    proc: asyncio.subprocess.Process
    port: int
    admin_port: int
    log_path: Path
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def chat(self, model: str = "chat", **extra: Any) -> aiohttp.ClientResponse:
        """A non-streamed chat request on a fresh connection; the body is read."""
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{self.url}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hello"}], **extra},
            )
            await response.read()
            return response

    async def get_admin(self, path: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.admin}{path}") as response:
            text = await response.text()
            try:
                return response.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return response.status, text

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 30.0) -> int:
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), within)


Launch = Callable[..., Awaitable[Routeway]]


LISTENING = re.compile(rb"listening on http://[^:]+:(\d+).*\(admin on http://[^:]+:(\d+)\)")
