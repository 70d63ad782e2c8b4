"""Streams from slow and broken upstreams, read with the official `openai` client (items 10
and 13 of issue 14).

Matrix: bytes arriving steadily but slower than whole events per `idle` (a trickle) are not a
stall; a first event later than `idle` but within `firstByte` (a long time to first token) is
not cut; an upstream that drops or stalls after its headers but before its first event is
retried on the fallback, and the client reads one clean stream (so is one that sends bytes
steadily that never end an event, beyond `MAX_EVENT_BYTES`); one that drops after an
event reached the client ends the stream with an error event the SDK raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from proxy_faults import FIRST_BYTE, IDLE, FaultServer
from proxy_helpers import Gateway, make_backend, make_config, make_route

RETRY_ON = ("connect-failure", "timeout", "5xx", "429")


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    await server.start()
    yield server
    await server.close()


def route_of(gateway: Gateway, faults: FaultServer, primary: str) -> None:
    backends = [
        make_backend("a", faults.base(primary), first_byte=FIRST_BYTE, idle=IDLE),
        make_backend("fb", faults.base("ok")),
    ]
    route = make_route("gpt", [("a", 1)], fallbacks=("fb",), retry_on=RETRY_ON)
    gateway.runtime.apply(make_config(backends, [route]), {})


async def read_stream(gateway: Gateway) -> tuple[str, str]:
    """The streamed text and the backend that answered."""
    async with AsyncOpenAI(base_url=gateway.v1, api_key="k", max_retries=0, timeout=10) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = ""
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text, raw.headers["x-routeway-backend"]


@pytest.mark.parametrize("behaviour", ["trickle-stream", "late-stream"])
async def test_a_slow_but_live_stream_is_not_cut(
    gateway: Gateway, faults: FaultServer, behaviour: str
) -> None:
    route_of(gateway, faults, behaviour)
    assert await read_stream(gateway) == ("hello", "ns/a")
    assert faults.seen == {behaviour: 1}


@pytest.mark.parametrize("behaviour", ["reset-stream-early", "stall-stream-early", "endless-event"])
async def test_a_failure_before_the_first_event_goes_to_the_fallback(
    gateway: Gateway, faults: FaultServer, behaviour: str
) -> None:
    route_of(gateway, faults, behaviour)
    assert await read_stream(gateway) == ("hello", "ns/fb")
    assert faults.seen == {behaviour: 1, "ok": 1}


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [("reset-stream", "upstream_disconnect"), ("stall-stream", "upstream_idle_timeout")],
)
async def test_a_failure_after_an_event_reached_the_client_is_raised(
    gateway: Gateway, faults: FaultServer, behaviour: str, code: str
) -> None:
    route_of(gateway, faults, behaviour)
    with pytest.raises(openai.APIError) as raised:
        await read_stream(gateway)
    assert raised.value.code == code
    assert faults.seen == {behaviour: 1}  # never retried: the client had an event
