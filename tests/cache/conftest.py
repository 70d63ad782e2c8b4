"""Fixtures of the response-cache tests: a real redis-server (tests/shared/redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer, running_redis


@pytest.fixture
def redis_rig() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server
