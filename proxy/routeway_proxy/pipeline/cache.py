"""Cache: answer a repeated request from the response cache before any backend is chosen,
and give the rest of the request a `CacheTicket` that fills the cache when the answer ends.

Only routes with `cache` come here (`handle.py` checks `route.config.cache` first, so a route
without one pays one attribute read). Order in `handle.py`: after authentication (the scope
identity is the caller's client) and before the `limit` stage, which must know whether the
request is a hit: a hit is a request like any other and counts against request limits, but
reserves no tokens (see `cache.control.charges_tokens`), so an exhausted token budget still
serves it. The request is counted in the cache's metrics only once the limits admitted it.

The ticket travels with the request's `Exchange`:
- `result` is the `x-routeway-cache` value of every answer of the request — a stream sets it
  before its headers go out (`relay.py`), everything else in `handle.py`, errors included;
- the relay hands it the upstream's answer: a whole document (`keep_document`), or a stream's
  raw bytes (`stream_assembler`, fed before the usage filter drops anything, kept only once
  the stream ended well: `keep_stream`);
- `settle.fill_cache` stores it when the request is settled. A cut stream, a client that left,
  an error or a non-storable answer (`answers.storable_answer`) stores nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from routeway_proxy.cache.answers import StoredAnswer, StreamAssembler, storable_answer
from routeway_proxy.cache.control import CachePlan, CacheResult, plan_request
from routeway_proxy.cache.tiers import render_hit

if TYPE_CHECKING:
    from routeway_proxy.cache.configure import GatewayCache
    from routeway_proxy.cache.key import CacheKind
    from routeway_proxy.cache.memory import Hit
    from routeway_proxy.cache.tiers import ResponseCache
    from routeway_proxy.table import RouteEntry


class CacheTicket:
    """The cache's part in one request that goes to the upstream."""

    __slots__ = ("_assembler", "_document", "cache", "kind", "max_bytes", "plan", "result", "route_id")

    def __init__(
        self, cache: ResponseCache, route_id: str, kind: CacheKind, plan: CachePlan, max_bytes: int
    ) -> None:
        self.cache = cache
        self.route_id = route_id
        self.kind = kind
        self.plan = plan
        self.max_bytes = max_bytes
        self.result: CacheResult = plan.result_without_hit
        self._document: bytes | None = None
        self._assembler: StreamAssembler | None = None

    def keep_document(self, status: int, body: bytes) -> None:
        """The whole successful answer (parsed only when the request is settled)."""
        if self.plan.store and status == 200:
            self._document = body

    def stream_assembler(self) -> StreamAssembler | None:
        """An assembler for a streamed answer, None when this request stores nothing."""
        if not self.plan.store or self.plan.key is None:
            return None
        return StreamAssembler(self.kind, self.max_bytes)

    def keep_stream(self, assembler: StreamAssembler) -> None:
        """The stream ended with its last byte sent: its assembler is the answer to store."""
        self._assembler = assembler

    def answer(self) -> StoredAnswer | None:
        """What to store, if anything (called once, when the request is settled)."""
        if self._document is not None:
            return storable_answer(self.kind, 200, self._document)
        if self._assembler is not None:
            return self._assembler.result()
        return None


async def lookup(
    gateway_cache: GatewayCache,
    route: RouteEntry,
    kind: CacheKind,
    body: dict[str, Any],
    client: str | None,
    cache_control: str | None,
) -> tuple[web.Response | None, CacheTicket | None, Hit | None]:
    """A hit's answer (and the hit), or None and the ticket of a request on its way upstream.
    `client` is the caller's identity for scope `Client` (None: the shared anonymous scope of
    callers without a ModelClient — the gateway-wide keys, an open gateway). Nothing is
    counted here: the caller counts the request (`ResponseCache.count`) once the limit stage
    admitted it."""
    cache = gateway_cache.cache
    route_id = route.id
    settings = cache.settings(route_id)
    namespace = gateway_cache.namespaces.get(route_id)
    if settings is None or namespace is None:  # the config changed since the table was read
        return None, None, None
    plan = plan_request(settings, namespace, kind, body, client, cache_control)
    hit = await cache.lookup(route_id, plan) if plan.lookup else None
    if hit is None:
        return None, CacheTicket(cache, route_id, kind, plan, settings.max_bytes), None
    payload, content_type, headers = render_hit(hit, plan)
    headers.update(route.headers)
    return web.Response(body=payload, content_type=content_type, headers=headers), None, hit
