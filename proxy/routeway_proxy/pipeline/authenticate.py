"""Authenticate: who is calling. Today a gateway either is open or accepts any of its client
keys (the values of `auth.apiKeySecretRef`); per-client keys, each limited to its models, will
resolve the caller's identity here, for the limit stage and for metrics.

Keys are compared in constant time per key and with no early exit, so the time of a refusal
says nothing about how close a guess came.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from routeway_proxy.errors import INVALID_REQUEST, ProxyError
from routeway_proxy.headers import read_bearer_token

if TYPE_CHECKING:
    from routeway_proxy.table import RoutingTable


def authenticate(table: RoutingTable, authorization: str | None) -> None:
    """401 unless the request carries one of the gateway's client keys (when any are set)."""
    if not table.auth_required:
        return
    token = read_bearer_token(authorization)
    accepted = False
    if token is not None:
        presented = token.encode()
        for key in table.client_keys:
            accepted |= hmac.compare_digest(presented, key)  # no early exit: constant time per key
    if not accepted:
        raise ProxyError(
            401,
            "Invalid or missing API key: send Authorization: Bearer <key>.",
            "invalid_api_key",
            INVALID_REQUEST,
            headers={"WWW-Authenticate": 'Bearer realm="routeway"'},
        )
