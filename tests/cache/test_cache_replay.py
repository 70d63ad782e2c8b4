"""Stored answers replayed, read back by the official `openai` SDK (`routeway_proxy.cache.replay`
and `tiers.render_hit`).

A tiny aiohttp server on 127.0.0.1 answers every request from one `ResponseCache`: the
request's plan (`control.plan_request`), a lookup, `render_hit` — what the wiring in
`pipeline/cache.py` will do. The stored answers come from the repo's `mock` provider, some
stored from its non-streamed answer and some assembled from its stream.

Matrix: non-streamed hit (same bytes, same id) · streamed hit without usage (no chunk has
usage) and with `include_usage` (the last chunk before [DONE] has it, the others `null`) ·
n=2 · completions streamed and not · embeddings · an answer assembled from a stream and
replayed to a non-streamed request · the raw event order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from cache_helpers import capture_mock, chat_body, sse_events
from openai import AsyncOpenAI
from routeway_proxy.cache.answers import StreamAssembler, storable_answer
from routeway_proxy.cache.control import plan_request
from routeway_proxy.cache.key import CacheKind, CacheSettings
from routeway_proxy.cache.memory import MemoryCaches
from routeway_proxy.cache.replay import replay_stream
from routeway_proxy.cache.tiers import ResponseCache, render_hit

ROUTE = "default/chat"
SETTINGS = CacheSettings(ttl=600, max_bytes=1 << 20, scope="Route")
PATHS: dict[str, CacheKind] = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
}


class ReplayServer:
    def __init__(self) -> None:
        self.cache = ResponseCache(MemoryCaches())
        self.cache.configure({ROUTE: SETTINGS})
        self.url = ""

    async def fill(self, kind: CacheKind, body: dict[str, Any], from_stream: bool = False) -> bytes:
        """Ask the mock provider once and store its answer as a miss would; the stored bytes."""
        plan = plan_request(SETTINGS, ROUTE, kind, body, None, None)
        if from_stream:
            _, stream = await capture_mock(
                kind, {**body, "stream": True, "stream_options": {"include_usage": True}}
            )
            assembler = StreamAssembler(kind, SETTINGS.max_bytes)
            assembler.feed(stream)
            answer = assembler.result()
        else:
            status, raw = await capture_mock(kind, body)
            answer = storable_answer(kind, status, raw)
        assert answer is not None
        assert self.cache.store(ROUTE, plan, answer)
        return answer.document

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = PATHS[request.match_info["tail"]]
        body = orjson.loads(await request.read())
        plan = plan_request(SETTINGS, ROUTE, kind, body, None, request.headers.get("Cache-Control"))
        hit = await self.cache.lookup(ROUTE, plan)
        if hit is None:
            return web.json_response({"error": {"message": "miss", "type": "test"}}, status=404)
        payload, content_type, headers = render_hit(hit, plan)
        return web.Response(body=payload, content_type=content_type, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    replay_server = ReplayServer()
    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", replay_server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    replay_server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield replay_server
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(server: ReplayServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0) as openai_client:
        yield openai_client


BODY = chat_body("replay me from the cache", max_tokens=6)


async def test_a_non_streamed_hit_is_the_stored_document(server: ReplayServer, client: AsyncOpenAI) -> None:
    stored = orjson.loads(await server.fill("chat", BODY))
    raw = await client.chat.completions.with_raw_response.create(**BODY)
    assert raw.headers["x-routeway-cache"] == "hit"
    assert raw.headers["Age"] == "0"
    completion = raw.parse()
    assert completion.id == stored["id"] and completion.created == stored["created"]
    assert completion.choices[0].message.content == stored["choices"][0]["message"]["content"]
    assert completion.usage is not None and completion.usage.completion_tokens == 6


@pytest.mark.parametrize("from_stream", [False, True])
async def test_a_streamed_hit_without_usage(
    server: ReplayServer, client: AsyncOpenAI, from_stream: bool
) -> None:
    stored = orjson.loads(await server.fill("chat", BODY, from_stream))
    chunks = [chunk async for chunk in await client.chat.completions.create(**BODY, stream=True)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == stored["choices"][0]["message"]["content"] == "replay me from the cache replay"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no usage-only chunk
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert {c.id for c in chunks} == {stored["id"]}


async def test_a_streamed_hit_with_usage_when_asked(server: ReplayServer, client: AsyncOpenAI) -> None:
    await server.fill("chat", BODY)
    stream = await client.chat.completions.create(**BODY, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 6)
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "replay me from the cache replay"


async def test_a_streamed_hit_with_two_choices(server: ReplayServer, client: AsyncOpenAI) -> None:
    body = {**BODY, "n": 2}
    await server.fill("chat", body)
    texts = {0: "", 1: ""}
    finishes = {}
    async for chunk in await client.chat.completions.create(**body, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "replay me from the cache replay", 1: "replay me from the cache replay"}
    assert finishes == {0: "length", 1: "length"}


@pytest.mark.parametrize("from_stream", [False, True])
async def test_completions_hits(server: ReplayServer, client: AsyncOpenAI, from_stream: bool) -> None:
    body = {"model": "chat", "prompt": "one two three", "max_tokens": 4}
    await server.fill("completions", body, from_stream)
    completion = await client.completions.create(**body)
    assert completion.choices[0].text == "one two three one"
    stream = await client.completions.create(**body, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three one"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7


async def test_an_embeddings_hit(server: ReplayServer, client: AsyncOpenAI) -> None:
    body = {
        "model": "chat",
        "input": ["alpha", "beta"],
        "encoding_format": "float",
    }  # the SDK sends base64 unless told
    stored = orjson.loads(await server.fill("embeddings", body))
    result = await client.embeddings.create(**body)
    assert [d.embedding for d in result.data] == [d["embedding"] for d in stored["data"]]


async def test_a_bypass_is_not_looked_up(server: ReplayServer, client: AsyncOpenAI) -> None:
    await server.fill("chat", BODY)
    raw = await client.chat.completions.with_raw_response.create(**BODY)
    assert raw.http_response.status_code == 200
    with pytest.raises(Exception, match="miss"):
        await client.chat.completions.create(**BODY, extra_headers={"Cache-Control": "no-cache"})


async def test_the_replayed_events_in_order() -> None:
    status, raw = await capture_mock("chat", BODY)
    answer = storable_answer("chat", status, raw)
    assert answer is not None
    events = sse_events(replay_stream(answer, include_usage=True))
    assert events[-1] == "[DONE]"
    role, content, finish, usage = events[:-1]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content["choices"][0]["delta"] == {"content": "replay me from the cache replay"}
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 11
    assert {e["object"] for e in events[:-1]} == {"chat.completion.chunk"}
    assert role["usage"] is None and content["usage"] is None and finish["usage"] is None
    assert all("usage" not in e for e in sse_events(replay_stream(answer, include_usage=False))[:-1])
