"""The in-process cache: one LRU per route, bounded by bytes, entries expiring by TTL.

No I/O; the clock is injected (`time.time` by default: the same wall clock as the shared
Redis tier's `Age`, so a hit says the same age whichever tier answered it).

Why per route: each route's `spec.cache.maxBytes` is its own bound, so a busy route cannot
evict a quiet route's answers. What a bound counts: the bytes of the key and of the stored
document — the data the entry holds, which is what grows with the answers; Python's fixed
per-entry overhead (the entry and dict slots, a few hundred bytes) is not counted. An answer
larger than the bound is not stored at all.

Expiry: checked on lookup (an expired entry is removed and misses); `RouteCache.expire`
drops every expired entry (the wiring may call it from a timer, so that idle routes give
their memory back). A route whose cache settings change starts empty, and a route that is gone
from the config is dropped. Why empty rather than kept: the route owner who shortens a TTL or
changes the scope expects no answer stored under the old terms to be served again (issue 13's
wiring contract); `RouteCache.resize` remains for a caller that wants to keep entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

from routeway_proxy.cache.answers import StoredAnswer
from routeway_proxy.cache.key import CacheSettings

Clock = Callable[[], float]
BytesHook = Callable[[int], None]


class Hit(NamedTuple):
    answer: StoredAnswer
    age: float
    """Seconds since the answer was stored."""


class _Entry(NamedTuple):
    answer: StoredAnswer
    stored_at: float
    expires_at: float
    size: int


def entry_size(key: str, answer: StoredAnswer) -> int:
    return len(key) + answer.size


class RouteCache:
    """One route's LRU of answers."""

    __slots__ = ("_entries", "bytes", "clock", "on_bytes", "settings")

    def __init__(
        self, settings: CacheSettings, clock: Clock = time.time, on_bytes: BytesHook | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_bytes = on_bytes  # told the new total after every change (a bytes gauge)
        self.bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Hit | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.expires_at:
            self._remove(key)
            self._changed()
            return None
        self._entries.move_to_end(key)
        return Hit(entry.answer, now - entry.stored_at)

    def put(
        self, key: str, answer: StoredAnswer, ttl: float | None = None, stored_at: float | None = None
    ) -> bool:
        """Store `answer`; False when it cannot be (larger than the bound, no TTL left).
        `ttl`/`stored_at`: an entry copied from the shared tier keeps its own remaining life."""
        size = entry_size(key, answer)
        bound = self.settings.max_bytes
        now = self.clock()
        born = now if stored_at is None else stored_at
        expires = born + (self.settings.ttl if ttl is None else ttl)
        if size > bound or expires <= now:
            return False
        if key in self._entries:
            self._remove(key)
        while self._entries and self.bytes + size > bound:
            self._remove(next(iter(self._entries)))  # least recently used first
        self._entries[key] = _Entry(answer, born, expires, size)
        self.bytes += size
        self._changed()
        return True

    def expire(self) -> int:
        """Remove every expired entry; how many were removed."""
        now = self.clock()
        gone = [key for key, entry in self._entries.items() if now >= entry.expires_at]
        for key in gone:
            self._remove(key)
        if gone:
            self._changed()
        return len(gone)

    def resize(self, settings: CacheSettings) -> None:
        """New settings for the route: evict to the new bound at once."""
        self.settings = settings
        evicted = False
        while self._entries and self.bytes > settings.max_bytes:
            self._remove(next(iter(self._entries)))
            evicted = True
        if evicted:
            self._changed()

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
        self._changed()

    def _remove(self, key: str) -> None:
        self.bytes -= self._entries.pop(key).size

    def _changed(self) -> None:
        if self.on_bytes is not None:
            self.on_bytes(self.bytes)


class MemoryCaches:
    """Every cached route's `RouteCache` in this process, kept across config applies."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.routes: dict[str, RouteCache] = {}

    def configure(
        self, settings: Mapping[str, CacheSettings], on_bytes: Callable[[str], BytesHook] | None = None
    ) -> None:
        """Apply a config's caches (route id -> settings): keep, empty on a change, add, drop.
        `on_bytes(route_id)` gives a new route's bytes hook."""
        for route_id in list(self.routes):
            if route_id not in settings:
                self.routes.pop(route_id).clear()
        for route_id, wanted in settings.items():
            cache = self.routes.get(route_id)
            if cache is None:
                hook = on_bytes(route_id) if on_bytes is not None else None
                self.routes[route_id] = RouteCache(wanted, self.clock, hook)
            elif cache.settings != wanted:
                cache.clear()
                cache.settings = wanted

    def get(self, route_id: str) -> RouteCache | None:
        return self.routes.get(route_id)
