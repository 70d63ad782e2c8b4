"""Fixtures of the process tests (helpers live in process_rig.py, importable by name)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from process_rig import (
    LISTENING,
    STARTUP_DEADLINE,
    UPSTREAM,
    Launch,
    Routeway,
    Upstream,
    chat_handler,
    eventually,
    routeway_command,
)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    app = web.Application()
    app[UPSTREAM] = state
    app.router.add_post("/v1/chat/completions", chat_handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{site.port}/v1"
    yield state
    state.release_stream.set()
    await runner.cleanup()


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start `routeway <args>` on ports the kernel picks (`--port 0 --admin-port 0`, read back
    from the startup line: no race with other tests for a "free" port); waits for /healthz."""
    started: list[Routeway] = []
    session = aiohttp.ClientSession()

    async def start(*args: str, workers: int = 1, drain_timeout: float = 20) -> Routeway:
        log_path = tmp_path / f"routeway-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *routeway_command(),
                *args,
                *(
                    "--port",
                    "0",
                    "--admin-port",
                    "0",
                    "--workers",
                    str(workers),
                    "--drain-timeout",
                    str(drain_timeout),
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
            )
        routeway = Routeway(proc, 0, 0, log_path, session)
        started.append(routeway)

        async def listening() -> re.Match[bytes] | None:
            if proc.returncode is not None:
                raise AssertionError(f"routeway exited with {proc.returncode}:\n{routeway.log()}")
            return LISTENING.search(log_path.read_bytes())

        found = await eventually(listening, within=STARTUP_DEADLINE, what="the startup line")
        routeway.port, routeway.admin_port = int(found[1]), int(found[2])

        async def healthy() -> bool:
            try:
                return (await routeway.get_admin("/healthz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, what="admin /healthz")
        return routeway

    yield start
    for routeway in started:
        if routeway.proc.returncode is None:
            routeway.proc.kill()
            await routeway.proc.wait()
    await session.close()
