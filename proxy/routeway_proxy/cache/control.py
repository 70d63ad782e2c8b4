"""What the cache does for one request, and the headers that say so (pure, no I/O).

`plan_request` decides once per request, before any I/O: the key, whether to look up,
whether to store the answer. Every answer of a route with a cache carries
`x-routeway-cache`:

- `hit`    — answered from the cache (with `Age`: seconds since the answer was stored);
- `miss`   — looked up, not found; the upstream answered (and the answer is stored if it
             is storable and the client did not send `no-store`);
- `bypass` — not looked up: the client sent `Cache-Control: no-cache` (or `max-age=0`,
             which asks for the same: nothing older than now), or the request is never
             cacheable (`key.uncacheable_reason`).

Client directives (request `Cache-Control`, tokens case-insensitive, others ignored):
- `no-cache` bypasses the lookup but still stores the fresh answer (unless `no-store`), so a
  client can refresh an entry;
- `no-store` prevents storing this request's answer; alone it does not prevent a lookup
  (RFC 9111 §5.2.1.5 forbids storing, not serving what is stored).

Limits (the `limit` stage, issue 13): a hit costs no upstream tokens, so it is settled with
zero tokens — its token reservation is released in full (`charges_tokens`) — but it is a
request like any other and counts against `requestsPerMinute`. Why: request limits protect
the gateway and express a client's allowance of calls; token limits express spend on models,
and a hit spends none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from routeway_proxy.cache.key import CacheKind, CacheSettings, cache_key, uncacheable_reason
from routeway_proxy.cache.replay import wants_usage

CACHE_HEADER = "x-routeway-cache"
CacheResult = Literal["hit", "miss", "bypass"]


@dataclass(frozen=True, slots=True)
class Directives:
    no_cache: bool = False
    no_store: bool = False


NO_DIRECTIVES = Directives()


def read_cache_control(value: str | None) -> Directives:
    """The request directives the cache obeys, from a `Cache-Control` header value."""
    if not value:
        return NO_DIRECTIVES
    no_cache = no_store = False
    for token in value.split(","):
        name, _, argument = token.strip().lower().partition("=")
        name = name.strip()
        if name == "no-cache" or (name == "max-age" and argument.strip().strip('"') == "0"):
            no_cache = True
        elif name == "no-store":
            no_store = True
    return Directives(no_cache, no_store)


class CachePlan(NamedTuple):
    """The cache's part in one request. `key` is None when nothing is looked up or stored.

    A NamedTuple rather than a frozen dataclass: immutable either way, and made once per
    request on a cached route, where a frozen dataclass's `object.__setattr__` per field costs
    several times a tuple's construction."""

    key: str | None
    lookup: bool
    store: bool
    stream: bool
    include_usage: bool

    @property
    def result_without_hit(self) -> CacheResult:
        """The header value when the answer comes from the upstream."""
        return "miss" if self.lookup else "bypass"


def plan_request(
    settings: CacheSettings,
    route_id: str,
    kind: CacheKind,
    body: dict[str, Any],
    client: str | None,
    cache_control: str | None,
) -> CachePlan:
    """Decide the cache's part in a request on a route whose cache is `settings`."""
    stream = body.get("stream") is True
    include_usage = stream and wants_usage(body)
    directives = read_cache_control(cache_control)
    lookup = not directives.no_cache
    store = not directives.no_store
    if (not lookup and not store) or uncacheable_reason(kind, body) is not None:
        return CachePlan(None, False, False, stream, include_usage)
    try:
        key = cache_key(route_id, kind, settings.scope, client, body)
    except ValueError:
        return CachePlan(None, False, False, stream, include_usage)
    return CachePlan(key, lookup, store, stream, include_usage)


def cache_headers(result: CacheResult, age: float | None = None) -> dict[str, str]:
    """Headers of an answer on a cached route; `age` in seconds for a hit."""
    if result == "hit" and age is not None:
        return {CACHE_HEADER: result, "Age": str(max(0, int(age)))}
    return {CACHE_HEADER: result}


def charges_tokens(result: CacheResult) -> bool:
    """Whether the answer is settled against token limits (see the module docstring)."""
    return result != "hit"
