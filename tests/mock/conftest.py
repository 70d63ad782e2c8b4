"""Fixtures for the simulated model: a real `routeway mock-backend` app on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import openai
import pytest
from aiohttp import web
from routeway_proxy.mock_backend import create_mock_app
from routeway_proxy.mock_model import error_random

from routeway.proxyconfig import MockBehaviour

StartServer = Callable[..., Awaitable[str]]


@pytest.fixture(autouse=True)
def seeded_errors() -> None:
    """Make `error_rate` draws repeatable in every test."""
    error_random.seed(1234)


@pytest.fixture
async def start_mock() -> AsyncIterator[StartServer]:
    """Start the standalone mock app with the given knobs; returns its `/v1` base URL."""
    runners: list[web.AppRunner] = []

    async def start(model_name: str = "", **knobs: object) -> str:
        runner = web.AppRunner(create_mock_app(MockBehaviour.model_validate(knobs), model_name))
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client(start_mock: StartServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real OpenAI SDK against a default mock server (no retries: errors show at once)."""
    base_url = await start_mock()
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk
