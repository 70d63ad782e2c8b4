"""Cache-Control, the per-request plan and `x-routeway-cache` (`routeway_proxy.cache.control`),
and the tiers object with its metrics (`tiers.ResponseCache`, `metrics.CacheMetrics`).

Matrix: directives (no-cache, no-store, max-age=0, case, arguments, unknown) · plan: lookup
and store per directive, result header miss/bypass, uncacheable requests bypass and store
nothing, include_usage only when streaming · headers of a hit (Age) · token limits not
charged for a hit · ResponseCache in memory only: miss, store, hit, no-store, bypass,
scope isolation between clients, metrics (requests by result, tokens saved, bytes).
"""

from __future__ import annotations

import pytest
from cache_helpers import FakeClock, capture_mock, chat_body
from prometheus_client import CollectorRegistry
from routeway_proxy.cache.answers import storable_answer
from routeway_proxy.cache.control import (
    Directives,
    cache_headers,
    charges_tokens,
    plan_request,
    read_cache_control,
)
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.memory import MemoryCaches
from routeway_proxy.cache.metrics import CacheMetrics
from routeway_proxy.cache.tiers import ResponseCache

SETTINGS = CacheSettings(ttl=60, max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Directives()),
        ("", Directives()),
        ("no-cache", Directives(no_cache=True)),
        ("No-Store", Directives(no_store=True)),
        ("no-cache, no-store", Directives(True, True)),
        ("max-age=0", Directives(no_cache=True)),
        ('max-age="0"', Directives(no_cache=True)),
        ("max-age=60", Directives()),
        ("private, no-transform", Directives()),
    ],
)
def test_read_cache_control(value: str | None, expected: Directives) -> None:
    assert read_cache_control(value) == expected


@pytest.mark.parametrize(
    ("header", "lookup", "store", "result"),
    [
        (None, True, True, "miss"),
        ("no-cache", False, True, "bypass"),
        ("no-store", True, False, "miss"),
        ("no-cache, no-store", False, False, "bypass"),
    ],
)
def test_plan_follows_the_directives(header: str | None, lookup: bool, store: bool, result: str) -> None:
    plan = plan_request(SETTINGS, "r", "chat", chat_body(), "c", header)
    assert (plan.lookup, plan.store, plan.result_without_hit) == (lookup, store, result)
    assert (plan.key is not None) == (lookup or store)


def test_an_uncacheable_request_bypasses_and_stores_nothing() -> None:
    plan = plan_request(SETTINGS, "r", "chat", chat_body(store=True), "c", None)
    assert (plan.key, plan.lookup, plan.store, plan.result_without_hit) == (None, False, False, "bypass")


def test_include_usage_only_when_streaming() -> None:
    options = {"stream_options": {"include_usage": True}}
    assert plan_request(SETTINGS, "r", "chat", chat_body(stream=True, **options), None, None).include_usage
    assert not plan_request(SETTINGS, "r", "chat", chat_body(**options), None, None).include_usage
    assert not plan_request(SETTINGS, "r", "chat", chat_body(stream=True), None, None).include_usage


def test_headers_and_token_charges() -> None:
    assert cache_headers("hit", 12.7) == {"x-routeway-cache": "hit", "Age": "12"}
    assert cache_headers("miss") == {"x-routeway-cache": "miss"}
    assert cache_headers("bypass") == {"x-routeway-cache": "bypass"}
    assert not charges_tokens("hit")
    assert charges_tokens("miss") and charges_tokens("bypass")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_response_cache_miss_store_hit_and_metrics() -> None:
    registry = CollectorRegistry()
    cache = ResponseCache(MemoryCaches(FakeClock()), metrics=CacheMetrics(registry))
    cache.configure({"r": SETTINGS})
    status, raw = await capture_mock("chat", chat_body())
    answer = storable_answer("chat", status, raw)
    assert answer is not None

    plan = plan_request(SETTINGS, "r", "chat", chat_body(), "default/a", None)
    assert await cache.lookup("r", plan) is None
    cache.count("r", plan.result_without_hit)
    assert cache.store("r", plan, answer)
    hit = await cache.lookup("r", plan)
    assert hit is not None and hit.answer == answer
    cache.count("r", "hit", hit)

    assert sample(registry, "routeway_cache_requests_total", route="r", result="miss") == 1
    assert sample(registry, "routeway_cache_requests_total", route="r", result="hit") == 1
    assert sample(registry, "routeway_cache_tokens_saved_total", route="r", type="prompt") == 3
    assert sample(registry, "routeway_cache_tokens_saved_total", route="r", type="completion") == 8
    assert sample(registry, "routeway_cache_bytes", route="r") == 64 + len(raw)

    other_client = plan_request(SETTINGS, "r", "chat", chat_body(), "default/b", None)
    assert await cache.lookup("r", other_client) is None  # scope Client: not shared
    bypass = plan_request(SETTINGS, "r", "chat", chat_body(), "default/a", "no-cache")
    assert await cache.lookup("r", bypass) is None
    assert await cache.lookup("other-route", plan) is None


async def test_no_store_and_uncached_routes_store_nothing() -> None:
    cache = ResponseCache(MemoryCaches(FakeClock()))
    cache.configure({"r": SETTINGS})
    status, raw = await capture_mock("chat", chat_body())
    answer = storable_answer("chat", status, raw)
    assert answer is not None
    no_store = plan_request(SETTINGS, "r", "chat", chat_body(), None, "no-store")
    assert not cache.store("r", no_store, answer)
    assert await cache.lookup("r", no_store) is None
    plan = plan_request(SETTINGS, "r", "chat", chat_body(), None, None)
    assert not cache.store("not-cached", plan, answer)
    assert cache.settings("not-cached") is None and cache.settings("r") == SETTINGS
