"""The in-process tier (`routeway_proxy.cache.memory`) with a fake clock.

Matrix: bytes counted as key + document · LRU eviction by bytes (a lookup refreshes) · an
answer larger than the bound is not stored · replacing a key · TTL: alive just before,
gone at expiry (and its bytes released) · `expire` · an entry copied in with its own age ·
per-route bounds · `configure` keeps, resizes, adds and drops routes · the bytes hook.
"""

from __future__ import annotations

from cache_helpers import FakeClock
from routeway_proxy.cache.answers import StoredAnswer
from routeway_proxy.cache.key import CacheSettings
from routeway_proxy.cache.memory import MemoryCaches, RouteCache


def answer(size: int, fill: bytes = b"x") -> StoredAnswer:
    return StoredAnswer("chat", fill * size)


KEY = 64  # a sha256 hex key's length


def key(name: str) -> str:
    return name.ljust(KEY, "0")


def test_bytes_count_key_and_document() -> None:
    cache = RouteCache(CacheSettings(ttl=60, max_bytes=10_000), FakeClock())
    assert cache.put(key("a"), answer(100))
    assert cache.put(key("b"), answer(250))
    assert cache.bytes == 2 * KEY + 350
    assert cache.put(key("a"), answer(10))  # replacing releases the old size
    assert cache.bytes == 2 * KEY + 260


def test_least_recently_used_is_evicted_by_bytes() -> None:
    cache = RouteCache(CacheSettings(ttl=60, max_bytes=3 * (KEY + 100)), FakeClock())
    for name in "abc":
        assert cache.put(key(name), answer(100))
    assert cache.get(key("a")) is not None  # a is now the most recent
    assert cache.put(key("d"), answer(100))
    assert key("b") not in cache
    assert [name for name in "acd" if key(name) in cache] == ["a", "c", "d"]
    assert cache.put(key("e"), answer(250))  # needs two entries' room: c and a go
    assert key("a") not in cache and key("c") not in cache and key("d") in cache
    assert cache.bytes == 2 * KEY + 350 <= cache.settings.max_bytes


def test_an_answer_larger_than_the_bound_is_not_stored() -> None:
    cache = RouteCache(CacheSettings(ttl=60, max_bytes=KEY + 100), FakeClock())
    assert cache.put(key("a"), answer(100))
    assert not cache.put(key("b"), answer(101))
    assert key("a") in cache and cache.bytes == KEY + 100


def test_entries_expire_at_their_ttl() -> None:
    clock = FakeClock()
    cache = RouteCache(CacheSettings(ttl=10, max_bytes=10_000), clock)
    cache.put(key("a"), answer(5))
    clock.advance(9.999)
    hit = cache.get(key("a"))
    assert hit is not None and hit.age == clock.now - 1_000_000.0
    clock.advance(0.001)
    assert cache.get(key("a")) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_expire_removes_every_expired_entry() -> None:
    clock = FakeClock()
    cache = RouteCache(CacheSettings(ttl=10, max_bytes=10_000), clock)
    cache.put(key("a"), answer(5))
    clock.advance(5)
    cache.put(key("b"), answer(5))
    clock.advance(5)
    assert cache.expire() == 1
    assert key("b") in cache and cache.bytes == KEY + 5


def test_an_entry_copied_in_keeps_its_age() -> None:
    clock = FakeClock()
    cache = RouteCache(CacheSettings(ttl=10, max_bytes=10_000), clock)
    assert cache.put(key("a"), answer(5), stored_at=clock.now - 8)
    hit = cache.get(key("a"))
    assert hit is not None and hit.age == 8
    clock.advance(2)
    assert cache.get(key("a")) is None
    assert not cache.put(key("b"), answer(5), stored_at=clock.now - 10)  # no life left


def test_routes_have_their_own_bounds_and_configure_keeps_them() -> None:
    clock = FakeClock()
    seen: dict[str, int] = {}
    caches = MemoryCaches(clock)

    def hook(route: str):  # type: ignore[no-untyped-def]
        return lambda total: seen.__setitem__(route, total)

    small = CacheSettings(ttl=60, max_bytes=KEY + 100)
    caches.configure({"r/one": small, "r/two": small}, hook)
    one, two = caches.get("r/one"), caches.get("r/two")
    assert one is not None and two is not None
    one.put(key("a"), answer(100))
    one.put(key("b"), answer(100))  # evicts a, in route one only
    two.put(key("a"), answer(100))
    assert key("a") not in one and key("b") in one and key("a") in two
    assert seen == {"r/one": KEY + 100, "r/two": KEY + 100}

    caches.configure({"r/one": small, "r/three": small}, hook)  # r/one unchanged: kept
    assert caches.get("r/one") is one and key("b") in one
    assert caches.get("r/two") is None and seen["r/two"] == 0  # dropped, its bytes released
    assert caches.get("r/three") is not None

    bigger = CacheSettings(ttl=30, max_bytes=10_000)
    caches.configure({"r/one": bigger}, hook)  # changed settings: emptied, new bound
    assert caches.get("r/one") is one and one.settings == bigger
    assert len(one) == 0 and seen["r/one"] == 0
    one.put(key("c"), answer(100))
    one.put(key("d"), answer(100))
    assert len(one) == 2  # the new, larger bound holds both


def test_resize_keeps_entries_and_evicts_to_the_new_bound() -> None:
    cache = RouteCache(CacheSettings(ttl=60, max_bytes=10_000), FakeClock())
    cache.put(key("a"), answer(100))
    cache.put(key("b"), answer(100))
    cache.resize(CacheSettings(ttl=60, max_bytes=KEY + 100))
    assert len(cache) == 1 and key("b") in cache
