"""Fixtures of the limits tests: a fake clock, a real redis-server, each store kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from limits_helpers import FakeClock
from redis_server import RedisServer, running_redis
from routeway_proxy.limits.local import LimitStore, LocalStore
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.shared import SharedStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["local", "shared", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[LimitStore]:
    """Every store kind with the same fake clock: the same scenarios must hold for each."""
    made: LimitStore
    if request.param == "local":
        made = LocalStore(clock)
    elif request.param == "shared":
        made = SharedStore.create(str(tmp_path / "limits.table"), slots=256, clock=clock)
    else:
        server = request.getfixturevalue("redis_server")
        made = RedisStore(connect(server.url, timeout=2.0), clock=clock)
    yield made
    await made.close()
