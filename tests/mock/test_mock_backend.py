"""`routeway mock-backend` over a real socket, driven by the real `openai` SDK.

Matrix: chat, chat streamed with and without include_usage, text completions (plain and
streamed), embeddings (the SDK's default base64 and floats), models list, health, model-name
override, error_rate=1 → InternalServerError, invalid requests → BadRequestError, malformed
JSON → 400 in the OpenAI shape, and the command itself: prints its port, SIGTERM → exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import openai
import pytest
from routeway_proxy.mock_model import embed_text, generate_tokens

StartServer = Callable[..., Awaitable[str]]  # the `start_mock` fixture


async def test_chat(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi there"}], max_tokens=3
    )
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.content == "hi there hi"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.total_tokens == 5


async def test_chat_stream_without_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "a b c"}], max_tokens=4, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c a"
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_chat_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "a b c"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 16, 19)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(generate_tokens("a b c", 16))


async def test_completions(client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(model="text-test", prompt="once upon", max_tokens=3)
    assert completion.model == "text-test"
    assert completion.choices[0].text == "once upon once"

    stream = await client.completions.create(model="text-test", prompt="x y", max_tokens=2, stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "x y"


async def test_embeddings_base64_default_and_floats(client: openai.AsyncOpenAI) -> None:
    default = await client.embeddings.create(model="emb", input=["alpha", "beta"])
    assert [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == pytest.approx(embed_text("alpha", 8), abs=1e-6)

    floats = await client.embeddings.create(model="emb", input="alpha", encoding_format="float", dimensions=4)
    assert floats.data[0].embedding == embed_text("alpha", 4)
    assert floats.model == "emb"


async def test_models_and_health(start_mock: StartServer) -> None:
    base_url = await start_mock(model_name="fixed")
    async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["fixed"]
        completion = await sdk.chat.completions.create(
            model="ignored", messages=[{"role": "user", "content": "q"}]
        )
        assert completion.model == "fixed"
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url.removesuffix("/v1") + "/healthz") as r,
    ):
        assert r.status == 200


async def test_error_rate_one_is_internal_server_error(start_mock: StartServer) -> None:
    base_url = await start_mock(errorRate=1.0)
    async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        assert caught.value.code == "mock_error"
        with pytest.raises(openai.InternalServerError):
            await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}], stream=True
            )


async def test_invalid_requests_are_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[])
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="m", input=[])
    with pytest.raises(openai.BadRequestError):
        await client.completions.create(model="m", prompt=[])


async def test_malformed_json_is_an_openai_400(start_mock: StartServer) -> None:
    base_url = await start_mock()
    async with aiohttp.ClientSession() as session:
        for body in (b"{not json", b"[1, 2]"):
            async with session.post(f"{base_url}/chat/completions", data=body) as response:
                assert response.status == 400
                error = (await response.json())["error"]
                assert error["type"] == "invalid_request_error"


async def test_command_prints_its_port_and_exits_0_on_sigterm() -> None:
    code = (
        "import argparse, sys\n"
        "from routeway_proxy.mock_backend import register\n"
        "parser = argparse.ArgumentParser()\n"
        "register(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        "mock-backend",
        "--port",
        "0",
        "--latency",
        "0s",
        "--max-tokens",
        "2",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith("routeway mock-backend listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1].strip() + "/v1"
        async with openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
            completion = await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "z"}]
            )
        assert completion.choices[0].message.content == "z z"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_client_leaving_mid_stream_stops_the_stream_quietly(start_mock: StartServer) -> None:
    base_url = await start_mock(tokensPerSecond=50, maxTokens=1000)
    body = {"model": "m", "messages": [{"role": "user", "content": "long"}], "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/chat/completions", json=body) as response:
            assert response.status == 200
            first = await response.content.readany()
            assert first.startswith(b"data: ")
        # the connection was closed with the stream unfinished; the server keeps serving
        async with session.get(base_url.removesuffix("/v1") + "/healthz") as health:
            assert health.status == 200
