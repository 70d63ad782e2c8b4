"""Header policy between client and upstream, as pure functions.

Why pure: what crosses the gateway is a security decision (a client's `Authorization` must
never reach a backend, a backend's hop-by-hop headers must never reach the client), so it is
decided in one place, with no I/O, and unit-tested on plain mappings.

Rules:
- Hop-by-hop headers (RFC 9110 §7.6.1: Connection, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-*) and every header named in `Connection` are dropped
  both ways.
- Upstream: the client's `Authorization` (and `api-key`, the Azure-style client key) is dropped
  and replaced by the backend credential;
  `Host`, `Content-Length` and `Content-Type` are set for the body the gateway sends;
  `Accept-Encoding: identity` so streamed bytes relay as they are; `X-Forwarded-For` gets the
  client address appended, `X-Forwarded-Proto` is set unless a front proxy already set it.
- Both ways, a value holding bytes that are not UTF-8 is passed on with each such byte as
  U+FFFD (`forwardable`), never dropped silently or failed on.
- Downstream: framing headers (`Content-Length`, `Content-Encoding`) and `Date`/`Server` are
  dropped because aiohttp writes its own for the body the gateway actually sends, and an
  upstream's `x-routeway-*` headers because the gateway sets its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
    "api-key",  # a client key, Azure-style: it stays at the gateway like Authorization
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "expect",
}
ROUTE_HEADER = "x-routeway-route"
BACKEND_HEADER = "x-routeway-backend"
REVISION_HEADER = "x-routeway-revision"
ARM_HEADER = "x-routeway-arm"  # "stable" or "canary", only on routes in a rollout
# the gateway sets its own: an upstream's (a chained gateway's) must not come first or twice
_NOT_RELAYED_DOWNSTREAM = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "date",
    "server",
    ROUTE_HEADER,
    BACKEND_HEADER,
    REVISION_HEADER,
    ARM_HEADER,
}


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


_DECISION_CACHE_LIMIT = 512  # header names repeat; an attacker's random names are not cached

# What to do with a header, by exact name (cached per direction): copy it, drop it, or (upstream
# only) treat it as one of the X-Forwarded-* headers the gateway appends to.
_KEEP, _DROP, _FORWARDED_FOR, _FORWARDED_PROTO = 0, 1, 2, 3

Pairs = list[tuple[str, str]]


def _decide(name: str, fixed: frozenset[str], upstream: bool) -> int:
    lower = name.lower()
    if lower in fixed or lower.startswith("proxy-"):
        return _DROP
    if upstream and lower == "x-forwarded-for":
        return _FORWARDED_FOR
    if upstream and lower == "x-forwarded-proto":
        return _FORWARDED_PROTO
    return _KEEP


_EMPTY: frozenset[str] = frozenset()
_UPSTREAM_DECISIONS: dict[str, int] = {}
_DOWNSTREAM_DECISIONS: dict[str, int] = {}


def _kept_pairs(
    headers: Mapping[str, str], fixed: frozenset[str], decisions: dict[str, int], upstream: bool
) -> tuple[Pairs, list[str], bool]:
    """One pass over `headers`: the pairs to copy (not in `fixed`, not Proxy-*, not named in
    Connection), and — upstream only — the X-Forwarded-For values seen (kept apart, the caller
    appends to them) and whether X-Forwarded-Proto was there. `decisions` caches `_decide` by
    exact header name, one dict per direction."""
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        has_connection = "Connection" in headers
    else:
        has_connection = any(k.lower() == "connection" for k in headers)
    named = list_connection_tokens(headers) if has_connection else _EMPTY
    pairs: Pairs = []
    forwarded_for: list[str] = []
    has_proto = False
    for name, value in headers.items():
        action = decisions.get(name)
        if action is None:
            action = _decide(name, fixed, upstream)
            if len(decisions) < _DECISION_CACHE_LIMIT:
                decisions[name] = action
        if action == _DROP or (named and name.lower() in named):
            continue
        if not value.isascii():
            value = forwardable(value)
        if action == _FORWARDED_FOR:
            forwarded_for.append(value)
            continue
        if action == _FORWARDED_PROTO:
            has_proto = True
        pairs.append((name, value))
    return pairs, forwarded_for, has_proto


def upstream_header_pairs(
    client_headers: Mapping[str, str], *, client_address: str | None, scheme: str
) -> Pairs:
    """Headers to send upstream for a client request whose JSON body the gateway re-sends,
    without the backend credential (each attempt adds its backend's), as pairs in one pass:
    aiohttp copies whatever headers a request is given, so pairs save building a multidict
    that would only be copied, on every request."""
    pairs, forwarded_for, has_proto = _kept_pairs(
        client_headers, _NOT_FORWARDED_UPSTREAM, _UPSTREAM_DECISIONS, True
    )
    pairs += (("Content-Type", "application/json"), ("Accept-Encoding", "identity"))
    if client_address:
        forwarded_for.append(client_address)
    if forwarded_for:
        pairs.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    if not has_proto:
        pairs.append(("X-Forwarded-Proto", scheme))
    return pairs


def build_upstream_headers(
    client_headers: Mapping[str, str],
    *,
    authorization: str | None,
    client_address: str | None,
    scheme: str,
) -> CIMultiDict[str]:
    """`upstream_header_pairs` plus the backend credential, as a multidict."""
    pairs = upstream_header_pairs(client_headers, client_address=client_address, scheme=scheme)
    if authorization:
        pairs.append(("Authorization", authorization))
    return CIMultiDict(pairs)


def response_header_pairs(
    upstream_headers: Mapping[str, str], extra: Iterable[tuple[str, str]] = ()
) -> Pairs:
    """Upstream response headers safe to relay to the client, then `extra`, as pairs: aiohttp
    copies whatever a response is given into its own multidict, so a list saves a copy."""
    pairs = _kept_pairs(upstream_headers, _NOT_RELAYED_DOWNSTREAM, _DOWNSTREAM_DECISIONS, False)[0]
    pairs.extend(extra)
    return pairs


def forwardable(value: str) -> str:
    """A header value to pass on: each byte of it that was not UTF-8 becomes U+FFFD.

    Why: aiohttp decodes such bytes to lone surrogates, and its writers cannot send them back
    (the C writer drops them silently, the pure-Python one raises UnicodeEncodeError — a 500
    on installs without the extension). Replacing them is visible and the same everywhere; a
    valid value, ASCII or not, is returned unchanged.
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def header_bytes(value: str) -> bytes:
    """A request header value as the bytes the client sent.

    Why: aiohttp decodes header bytes as UTF-8 with `surrogateescape`, so a value holding a
    byte that is not UTF-8 (`Bearer \\xe9`) arrives as a str with a lone surrogate, which a
    plain `.encode()` refuses with UnicodeEncodeError — a 500 for a malformed header. Anything
    that hashes or compares a header value (client keys, sticky keys) encodes it here; a value
    that was valid UTF-8 gives the same bytes as `.encode()`.
    """
    return value.encode("utf-8", "surrogateescape")


def read_bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
