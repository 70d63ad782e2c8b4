"""Header policy between client and upstream, as pure functions.

Why pure: what crosses the gateway is a security decision (a client's `Authorization` must
never reach a backend, a backend's hop-by-hop headers must never reach the client), so it is
decided in one place, with no I/O, and unit-tested on plain mappings.

Rules:
- Hop-by-hop headers (RFC 9110 §7.6.1: Connection, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-*) and every header named in `Connection` are dropped
  both ways.
- Upstream: the client's `Authorization` is dropped and replaced by the backend credential;
  `Host`, `Content-Length` and `Content-Type` are set for the body the gateway sends;
  `Accept-Encoding: identity` so streamed bytes relay as they are; `X-Forwarded-For` gets the
  client address appended, `X-Forwarded-Proto` is set unless a front proxy already set it.
- Downstream: framing headers (`Content-Length`, `Content-Encoding`) and `Date`/`Server` are
  dropped because aiohttp writes its own for the body the gateway actually sends.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

_NOT_FORWARDED_UPSTREAM = HOP_BY_HOP | {
    "authorization",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "expect",
}
_NOT_RELAYED_DOWNSTREAM = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}


def list_connection_tokens(headers: Mapping[str, str]) -> frozenset[str]:
    """Header names listed in `Connection` (lower-cased): hop-by-hop by declaration."""
    values = _get_all(headers, "connection")
    tokens = {token.strip().lower() for value in values for token in value.split(",")}
    tokens.discard("")
    return frozenset(tokens)


def _get_all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        found: list[str] = getall(name, [])
        return found
    return [v for k, v in headers.items() if k.lower() == name]


_EMPTY: frozenset[str] = frozenset()


_DECISION_CACHE_LIMIT = 512  # header names repeat; an attacker's random names are not cached


def _is_fixed_drop(name: str, fixed: frozenset[str]) -> bool:
    lower = name.lower()
    return lower in fixed or lower.startswith("proxy-")


def _copy_allowed(
    headers: Mapping[str, str], fixed: frozenset[str], decisions: dict[str, bool]
) -> CIMultiDict[str]:
    """The headers whose names are neither in `fixed`, nor Proxy-*, nor named in Connection.

    `decisions` caches `_is_fixed_drop` by exact header name (one dict per `fixed` set)."""
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        has_connection = "Connection" in headers
    else:
        has_connection = any(k.lower() == "connection" for k in headers)
    named = list_connection_tokens(headers) if has_connection else _EMPTY
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    for name, value in headers.items():
        drop = decisions.get(name)
        if drop is None:
            drop = _is_fixed_drop(name, fixed)
            if len(decisions) < _DECISION_CACHE_LIMIT:
                decisions[name] = drop
        if drop or (named and name.lower() in named):
            continue
        add(name, value)
    return out


_UPSTREAM_DECISIONS: dict[str, bool] = {}
_DOWNSTREAM_DECISIONS: dict[str, bool] = {}


def build_upstream_headers(
    client_headers: Mapping[str, str],
    *,
    authorization: str | None,
    client_address: str | None,
    scheme: str,
) -> CIMultiDict[str]:
    """Headers to send upstream for a client request whose JSON body the gateway re-sends."""
    out = _copy_allowed(client_headers, _NOT_FORWARDED_UPSTREAM, _UPSTREAM_DECISIONS)
    out["Content-Type"] = "application/json"
    out["Accept-Encoding"] = "identity"
    if authorization:
        out["Authorization"] = authorization
    if client_address:
        previous = out.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{previous}, {client_address}" if previous else client_address
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = scheme
    return out


def filter_response_headers(upstream_headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Upstream response headers safe to relay to the client."""
    return _copy_allowed(upstream_headers, _NOT_RELAYED_DOWNSTREAM, _DOWNSTREAM_DECISIONS)


def read_bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
