"""SIGTERM drain, as Kubernetes stops a pod: a stream in flight finishes, nothing new starts.

Covers, for one process and for a supervisor with workers: the listener closes at once (new
connections refused), `/readyz` turns 503 while the stream goes on, the stream's remaining
events arrive intact, and the process exits 0 once it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp
import pytest
from process_rig import Launch, Routeway, Upstream, eventually, manifest


async def refuses_connections(routeway: Routeway) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", routeway.port)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def start_stream(routeway: Routeway, client: aiohttp.ClientSession) -> aiohttp.ClientResponse:
    """Once the gateway is ready: a streamed chat whose first event arrived (the rig's upstream
    holds the rest until `release_stream` is set)."""

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(ready, what="/readyz", within=30)
    response = await client.post(
        f"{routeway.url}/v1/chat/completions",
        json={"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status == 200
    assert b"first" in await response.content.readuntil(b"\n\n")
    return response


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_a_stream_finish(
    tmp_path: Path, launch: Launch, upstream: Upstream, workers: int
) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path), workers=workers)
    async with aiohttp.ClientSession() as client:
        response = await start_stream(routeway, client)
        routeway.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return (await routeway.get_admin("/readyz"))[0] == 503

        await eventually(draining, what="/readyz 503 while draining")
        await eventually(lambda: refuses_connections(routeway), what="listener closed")
        assert routeway.proc.returncode is None  # still waiting for the stream

        upstream.release_stream.set()
        rest = await response.content.read()
        response.release()

    assert b"second" in rest and b"third" in rest and rest.rstrip().endswith(b"data: [DONE]")
    assert await asyncio.wait_for(routeway.proc.wait(), 30) == 0
    assert "drained" in routeway.log()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_stream_still_running_when_the_grace_period_ends_gets_an_error_event(
    tmp_path: Path, launch: Launch, upstream: Upstream, workers: int
) -> None:
    """Not cut silently (which an SDK could take for a complete answer): an OpenAI error event,
    counted as a 503 of the gateway, not as a failure of the backend; then exit 0."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path), workers=workers, drain_timeout=1)
    async with aiohttp.ClientSession() as client:
        response = await start_stream(routeway, client)
        routeway.proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(response.content.read(), 30)  # the upstream never finishes
        response.release()
    events = [e for e in rest.split(b"\n\n") if e.strip()]
    assert len(events) == 1 and b'"code":"gateway_shutting_down"' in events[0], rest
    assert b"[DONE]" not in rest
    assert await asyncio.wait_for(routeway.proc.wait(), 30) == 0
    assert "ending 1 requests with a shutdown error" in routeway.log() or workers > 1
    assert "ejected" not in routeway.log()


async def test_second_signal_stops_waiting(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    """An impatient operator (Ctrl-C twice): the drain is cut short, exit 1."""
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path))
    async with aiohttp.ClientSession() as client:
        response = await client.post(
            f"{routeway.url}/v1/chat/completions",
            json={"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
        await response.content.readuntil(b"\n\n")
        routeway.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: refuses_connections(routeway), what="listener closed")
        routeway.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(routeway.proc.wait(), 30) == 1
        response.release()
    assert "not waiting for requests in flight" in routeway.log()
