"""The cache key of a request, and which requests may be cached at all (pure, no I/O).

The key is `sha256(route id, endpoint kind, scope identity, canonical body)`, hex. Two
requests share a key exactly when a model server would see the same question from the same
party: the same route and endpoint, the same client (scope `Client`; scope `Route` shares
answers between every caller of the route), and the same body up to the differences below.

Canonical body — what is the same question:
- keys of every object sorted, no whitespace (clients serialise in any order);
- `stream`, `stream_options` and `user` removed: they change how the answer is delivered or
  who is billed, never its content (one entry serves streamed and non-streamed requests);
- numbers: an integral float is its integer (`1.0` is `1`, `-0.0` is `0`), other floats keep
  their shortest round-trip form. Why: JSON has one number type; JavaScript cannot even write
  `1.0`, Python's json writes it, and every model server parses both into the same sampling
  parameter. Booleans stay booleans (`true` is not `1`), strings are compared byte for byte
  (whitespace in a prompt changes the answer).

The route id is whatever the caller passes as `route_id`: the route's id keeps answers across
config changes of the route (a changed backend or model keeps serving stored answers until
their TTL); passing the id with the route's config revision instead makes every change of the
route start from an empty cache. The wiring (`configure.key_namespace`) passes the route's id
with its cache settings: other edits of the route keep its answers, a change of its cache
settings starts it afresh (in Redis too). The in-process store is per route id either way.

What is cacheable (`uncacheable_reason` is None): chat completions, completions and
embeddings, including `n > 1` (the answer holds every choice) and requests that offer
`tools` (only answers that end in `stop`/`length` are stored, so a tool call itself never
is; see `answers.py`). Whatever the `temperature`: as in LiteLLM's and Portkey's exact-match
caches, a sampled answer is one valid draw, and the route owner who turns the cache on asks
for exactly that trade (repeat the draw, save the tokens); a client that wants a fresh draw
sends `Cache-Control: no-cache`.

What is never cached, and why:
- `store: true` — the client asked the upstream to record this call (OpenAI stored
  completions); a hit would silently skip that side effect;
- `logprobs` (truthy) / `top_logprobs` — per-token data that a streamed replay would have to
  re-chunk exactly, and that clients asking for it usually want measured, not repeated;
- a body whose canonical form cannot be built (a number orjson cannot write).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

CacheScope = Literal["Client", "Route"]
CacheKind = Literal["chat", "completions", "embeddings"]

EXCLUDED_FIELDS = frozenset({"stream", "stream_options", "user"})
"""Top-level request fields that never change the answer's content."""

CACHEABLE_KINDS: frozenset[str] = frozenset({"chat", "completions", "embeddings"})


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A route's `spec.cache`, as the proxy reads it: seconds, bytes, scope."""

    ttl: float
    max_bytes: int
    scope: CacheScope = "Client"


def uncacheable_reason(kind: str, body: dict[str, Any]) -> str | None:
    """Why this request may not be answered from (or fill) the cache; None when it may."""
    if kind not in CACHEABLE_KINDS:
        return "endpoint"
    if body.get("store") is True:
        return "store"
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        return "logprobs"
    return None


_LEAVES = (str, int, bool, type(None))
"""Types `canonical_value` returns as they are (checked by exact type: no call per leaf)."""


def canonical_value(value: Any) -> Any:
    """`value` with integral floats as integers, recursively (dict keys are sorted on dump).
    Leaves are tested inline, so a request of strings and integers costs one call per
    container, not one per value."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _LEAVES else canonical_value(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _LEAVES else canonical_value(item) for item in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    return value  # str, int, bool, None (and nothing else: the JSON parser made the body)


def canonical_body(body: dict[str, Any]) -> bytes:
    """The request as the cache compares it: answer-neutral fields removed, keys sorted,
    numbers canonical. Raises `ValueError` for a body that has no canonical form."""
    try:
        kept = {
            key: item if type(item) in _LEAVES else canonical_value(item)
            for key, item in body.items()
            if key not in EXCLUDED_FIELDS
        }
    except RecursionError:  # nesting deeper than Python recurses (the parser allows 1024 levels)
        raise ValueError("the request body is nested too deeply") from None
    try:
        return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # e.g. an int beyond 64 bits from the parser
        raise ValueError(str(exc)) from None


def scope_identity(scope: CacheScope, client: str | None) -> str:
    """Who shares answers: one client (its name; `""` for callers without a client identity,
    e.g. the gateway's full-access keys) or everyone on the route."""
    if scope == "Route":
        return "*"
    return "client:" + (client or "")


def cache_key(route_id: str, kind: str, scope: CacheScope, client: str | None, body: dict[str, Any]) -> str:
    """The entry's key, hex sha256. Parts are length-prefixed so that no choice of route id
    or client name can make two different (route, client, body) triples collide. Hashed in
    one call: each `update` of OpenSSL's sha256 costs about as much as hashing the whole key."""
    route, endpoint, identity = route_id.encode(), kind.encode(), scope_identity(scope, client).encode()
    data = b"".join(
        (
            len(route).to_bytes(4, "big"),
            route,
            len(endpoint).to_bytes(4, "big"),
            endpoint,
            len(identity).to_bytes(4, "big"),
            identity,
            canonical_body(body),
        )
    )
    return hashlib.sha256(data).hexdigest()
