"""The upstream fault table (proxy_faults.FAULTS), one test per row, through the real gateway.

Each row is a route with a misbehaving primary and a fallback (see proxy_faults); the test
asserts what the client saw (status, body shape, Retry-After), which backend answered, and
the failed attempts the gateway counted per backend and reason — the same outcome
`scripts/upstream-faults` prints into docs/reliability.md, never the time it took.
Besides: neither an answer nor a log line (any level) quotes an upstream's error page (it may
echo a credential), and nothing is left in flight.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from proxy_faults import FAULTS, FIRST_BYTE, IDLE, LEAKED, Fault, FaultServer, ask, expected, failures_of
from proxy_helpers import Gateway, make_backend, make_config, make_route

RETRY_ON = ("connect-failure", "timeout", "5xx", "429")


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    await server.start()
    yield server
    await server.close()


def slug(fault: Fault) -> str:
    return fault.name.replace(" ", "-").lower()


def configure(gateway: Gateway, server: FaultServer, fault: Fault) -> dict[str, str]:
    """The row's route on `gateway`; its backend ids by role."""
    name = slug(fault)
    primary, fallback = f"{name}-primary", f"{name}-fallback"
    backends = [
        make_backend(primary, server.base(fault.primary), first_byte=FIRST_BYTE, idle=IDLE),
        make_backend(fallback, server.base(fault.fallback), first_byte=FIRST_BYTE, idle=IDLE),
    ]
    route = make_route(name, [(primary, 1)], fallbacks=(fallback,), attempts=1, retry_on=RETRY_ON)
    gateway.runtime.apply(make_config(backends, [route]), {})
    return {f"ns/{primary}": "primary", f"ns/{fallback}": "fallback"}


def error_samples(gateway: Gateway) -> dict[tuple[str, str], float]:
    samples: dict[tuple[str, str], float] = {}
    for family in gateway.runtime.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "routeway_upstream_errors_total":
                samples[(sample.labels["backend"], sample.labels["reason"])] = sample.value
    return samples


@pytest.mark.parametrize("fault", FAULTS, ids=[slug(f) for f in FAULTS])
async def test_upstream_fault(
    gateway: Gateway, faults: FaultServer, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    roles = configure(gateway, faults, fault)
    async with aiohttp.ClientSession() as session:
        seen = await ask(session, gateway.v1, slug(fault), fault.stream)
    seen.failures = failures_of(error_samples(gateway), roles)
    assert seen.outcome() == expected(fault)
    assert LEAKED.encode() not in seen.body
    assert LEAKED not in caplog.text
    in_flight = gateway.runtime.metrics.registry.get_sample_value(
        "routeway_requests_in_flight", {"route": f"ns/{slug(fault)}"}
    )
    assert in_flight == 0
