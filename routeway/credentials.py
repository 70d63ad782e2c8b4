"""Resolve the credential refs a ProxyConfig names, at the edge that needs them.

The ProxyConfig only says `namespace/secret/key`; values are looked up here, by `routeway
serve` from Secrets in its files and by the operator from the API, and are handed to the proxy
through a separate channel (memory, or a Kubernetes Secret) — never a ConfigMap.

Two kinds of refs, two kinds of entries in that store:
- a backend credential is sent upstream, so the store holds its value;
- a client key (the gateway's `auth.apiKeySecretRef` keys, `GatewayConfig.client_key_refs`,
  and every `ClientConfig.key_ref`) is only ever compared with what a caller presents, so the
  store holds its hash, `sha256:<64 hex digits>` (`hash_client_key`, defined with the store's
  format in `routeway.proxyconfig`), never its value. The
  proxy hashes the presented key and looks the digest up; a store entry for a client key that
  is not of that form (a value written by an older control plane) authenticates nobody.

Why an unsalted SHA-256 is enough: client keys are random tokens, not passwords — there is no
dictionary to try against the hash, and a digest names the key without revealing it. A ref
that is both a backend credential and a client key keeps its value (the backend needs it), and
so authenticates nobody as a client key: an upstream credential handed out to callers is a
misconfiguration this does not support.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable

from routeway.proxyconfig import KEY_HASH_PREFIX, ProxyConfig, hash_client_key, key_hash_digest
from routeway.resources import Secret, is_sops_encrypted

Lookup = Callable[[str, str, str], str | None]

__all__ = [
    "KEY_HASH_PREFIX",
    "Lookup",
    "client_key_refs",
    "credential_refs",
    "hash_client_key",
    "key_hash_digest",
    "lookup_in",
    "resolve_credentials",
    "secret_value",
]


def client_key_refs(config: ProxyConfig) -> frozenset[str]:
    """The refs of every client key the config names: the gateway's and its clients'."""
    return frozenset(config.gateway.client_key_refs) | {c.key_ref for c in config.gateway.clients}


def credential_refs(config: ProxyConfig) -> list[str]:
    """Every credential the config names: its backends', the backend specs a route's rollout
    arms pin (a stable arm may still use an older spec's credential), the client keys (the
    gateway's and its ModelClients'), the password of the gateway's limits Redis (a value, like
    a backend credential: the proxy sends it)."""
    redis = config.gateway.limits.redis_password_ref
    return sorted(_backend_refs(config) | client_key_refs(config) | ({redis} if redis else set()))


def resolve_credentials(config: ProxyConfig, lookup: Lookup) -> dict[str, str]:
    """Map each credential ref of `config` to what the proxy's store holds for it: a backend
    credential's value, a client key's hash (see the module docstring). Refs without a value
    are left out (the proxy then answers as for a missing credential, never with someone
    else's)."""
    backend_refs = _backend_refs(config)
    keys = client_key_refs(config)
    out: dict[str, str] = {}
    for ref in credential_refs(config):
        namespace, name, key = ref.split("/", 2)
        value = lookup(namespace, name, key)
        if value is None:
            continue
        out[ref] = hash_client_key(value) if ref in keys and ref not in backend_refs else value
    return out


def _backend_refs(config: ProxyConfig) -> frozenset[str]:
    backends = list(config.backends)
    for route in config.routes:
        backends.extend(route.pinned_backends)
        if route.canary is not None:
            backends.extend(route.canary.pinned_backends)
    return frozenset(b.credential_ref for b in backends if b.credential_ref)


def secret_value(secret: Secret, key: str) -> str | None:
    """A Secret's value as the API server would store it: stringData wins over data.

    None for a SOPS-encrypted Secret and for any value that is SOPS ciphertext (a Secret
    applied without decryption): `ENC[…]` must never reach an upstream as a bearer token."""
    if secret.encrypted:
        return None
    if key in secret.string_data:
        # stripped like `data` below: a YAML block scalar or a file leaves a trailing newline
        value: str | None = secret.string_data[key].strip()
    else:
        raw = secret.data.get(key)
        if raw is None:
            return None
        try:
            value = base64.b64decode("".join(raw.split()), validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None if is_sops_encrypted(value) else value


def lookup_in(secrets: Iterable[Secret]) -> Lookup:
    index = {(s.namespace, s.name): s for s in secrets}

    def lookup(namespace: str, name: str, key: str) -> str | None:
        secret = index.get((namespace, name))
        return secret_value(secret, key) if secret else None

    return lookup
