"""Authenticate: who is calling, and which models it may call.

The stage yields a `Caller`, the identity every later stage uses: `client_id` ("ns/name" of a
ModelClient, None for a gateway-wide key or an open gateway), `client` (its `ClientConfig`,
with `.limits` and `.models`; None likewise), `label` (what its metrics and log lines carry:
the client id, "" for none — never the key) and the models it may call. Callers are built
once per routing table (`routeway_proxy.clients`), so authenticating allocates nothing: an
open gateway returns `table.gateway_caller` without reading a header.

Keys: `Authorization: Bearer <key>`, or `api-key: <key>` as Azure-style clients send it (the
Bearer token wins when both are sent). No key, or a key that is no one's: 401
`invalid_api_key`. The proxy holds only SHA-256 digests of keys (`routeway.credentials`): the
presented key is hashed and its digest looked up in a dict, then confirmed with
`hmac.compare_digest`. Why a dict lookup is safe against timing: what its time depends on is
the digest of the presented key and how it compares with stored digests — and learning bits
of a stored key's SHA-256 digest brings a guesser no closer to a key that produces it (that
is a preimage). The time says nothing about how close a guessed key came.

Models (`check_model`): a client limited to some models gets 403 `model_not_allowed` for any
model outside its list, whether or not the gateway serves it — so a client learns nothing of
the models it may not use; a name its list allows that no route serves is 404
`model_not_found`, as for everyone. Gateway keys and open gateways may call every model.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from routeway_proxy.errors import INVALID_REQUEST, ProxyError
from routeway_proxy.headers import header_bytes, read_bearer_token

if TYPE_CHECKING:
    from routeway.proxyconfig import ClientConfig
    from routeway_proxy.table import RoutingTable
    from routeway_proxy.usage import ClientUsage


@dataclass(frozen=True, slots=True, eq=False)
class Caller:
    """Who a request comes from (see the module docstring); one object per identity and table."""

    client_id: str | None  # "ns/name" of a ModelClient; None: a gateway-wide key, or no auth
    client: ClientConfig | None  # that client's config (`.limits`, `.models`)
    label: str  # the `client` label of metrics and log lines: client_id, or ""
    models: frozenset[str] | None  # the served public models it may call; None: every model
    models_body: bytes  # its GET /v1/models answer, prebuilt
    usage: ClientUsage | None = None  # this process's usage windows of the client (GET /usage)

    def permits(self, model: str) -> bool:
        """Whether the client's list names `model` (served or not)."""
        client = self.client
        if client is None or client.models is None:
            return True
        return any(fnmatchcase(model, pattern) for pattern in client.models)


def read_client_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: its Bearer token, else its `api-key` header."""
    token = read_bearer_token(headers.get("Authorization"))
    if token is not None:
        return token
    key = headers.get("api-key")
    if key is not None:
        key = key.strip()
    return key or None


def digest_client_key(key: str) -> bytes:
    """The SHA-256 digest the credential store's `sha256:` hashes hold, of the bytes sent (a
    header that was not UTF-8 digests as what was sent, never a UnicodeEncodeError)."""
    return hashlib.sha256(header_bytes(key)).digest()


def authenticate(table: RoutingTable, headers: Mapping[str, str]) -> Caller:
    """The caller of a request, or 401 when the gateway requires a key and this is no one's."""
    if not table.auth_required:
        return table.gateway_caller
    key = read_client_key(headers)
    if key is not None:
        digest = digest_client_key(key)
        found = table.callers.get(digest)
        if found is not None and hmac.compare_digest(found[0], digest):
            return found[1]
    raise ProxyError(
        401,
        "Invalid or missing API key: send Authorization: Bearer <key>.",
        "invalid_api_key",
        INVALID_REQUEST,
        headers={"WWW-Authenticate": 'Bearer realm="routeway"'},
    )


def check_model(caller: Caller, model: str) -> None:
    """403 unless `caller` may call `model` (see the module docstring for 403 versus 404)."""
    models = caller.models
    if models is None or model in models or caller.permits(model):
        return
    raise model_not_allowed(model)


def model_not_allowed(model: str) -> ProxyError:
    return ProxyError(
        403,
        f"This API key may not use the model '{model}'.",
        "model_not_allowed",
        INVALID_REQUEST,
        param="model",
    )
