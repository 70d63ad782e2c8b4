"""Fixtures of the response-cache tests: a real redis-server (tests/shared/redis_rig.py)."""

from __future__ import annotations

from redis_rig import redis_rig

__all__ = ["redis_rig"]
