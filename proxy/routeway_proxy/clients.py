"""The callers of a routing table: every identity a key can have, built once per config.

Why prebuilt: authentication is a digest lookup that returns one of these objects
(`pipeline.authenticate`), and a client's model list is compiled here against the routes the
table serves — a set lookup per request, and a ready `/v1/models` answer per client.

Keys come from the credential store as `sha256:` hashes (`routeway.credentials`); an entry that
is not a hash (a value an older control plane stored) authenticates nobody and is logged by
its ref, never shown. A key claimed by two identities (two ModelClients naming the same
Secret key, or a client key that is also a gateway key) authenticates neither: which team it
belongs to cannot be decided, and attributing its use and limits to one of them at random
would be worse than refusing it, which the log line then explains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from fnmatch import fnmatchcase

from routeway.proxyconfig import ProxyConfig, key_hash_digest
from routeway_proxy.pipeline.authenticate import Caller
from routeway_proxy.usage import UsageFamilies

log = logging.getLogger("routeway.proxy")

Callers = Mapping[bytes, tuple[bytes, Caller]]
"""Key digest -> (the digest again, for `hmac.compare_digest`, and its caller)."""


def build_callers(
    config: ProxyConfig,
    credentials: Mapping[str, str],
    served: Collection[str],
    models_body: bytes,
    usage: UsageFamilies,
    render_models: Callable[[list[str]], bytes],
) -> tuple[Caller, Callers]:
    """The gateway-wide caller (gateway keys, or everyone on an open gateway) and the callers
    by key digest."""
    gateway_caller = Caller(None, None, "", None, models_body)
    claims: dict[bytes, list[tuple[str, Caller]]] = {}
    for ref in config.gateway.client_key_refs:
        digest = _digest(credentials, ref, "gateway client key")
        if digest is not None:
            claims.setdefault(digest, []).append(("the gateway", gateway_caller))
    for client in config.gateway.clients:
        digest = _digest(credentials, client.key_ref, f"client {client.id}: key")
        if digest is None:
            continue
        if client.models is None:
            models = None
            body = models_body
        else:
            patterns = client.models
            models = frozenset(m for m in served if any(fnmatchcase(m, p) for p in patterns))
            body = render_models(sorted(models))
        caller = Caller(client.id, client, client.id, models, body, usage.for_client(client.id))
        claims.setdefault(digest, []).append((f"client {client.id}", caller))
    callers: dict[bytes, tuple[bytes, Caller]] = {}
    for digest, owners in claims.items():
        identities = {id(caller) for _, caller in owners}
        if len(identities) > 1:
            log.warning(
                "one key is claimed by %s: it authenticates none of them",
                " and ".join(sorted({name for name, _ in owners})),
            )
            continue
        callers[digest] = (digest, owners[0][1])
    return gateway_caller, callers


def _digest(credentials: Mapping[str, str], ref: str, what: str) -> bytes | None:
    stored = credentials.get(ref)
    if not stored:
        log.warning("%s %s is not available; it will not authenticate anyone", what, ref)
        return None
    digest = key_hash_digest(stored)
    if digest is None:
        log.warning(
            "%s %s is not stored as a sha256 hash (an older control plane?); it will not authenticate anyone",
            what,
            ref,
        )
    return digest
