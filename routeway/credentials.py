"""Resolve the credential refs a ProxyConfig names into values, at the edge that needs them.

The ProxyConfig only says `namespace/secret/key`; values are looked up here, by `routeway
serve` from Secrets in its files and by the operator from the API, and are handed to the proxy
through a separate channel (memory, or a Kubernetes Secret) — never a ConfigMap.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable

from routeway.proxyconfig import ProxyConfig
from routeway.resources import Secret, is_sops_encrypted

Lookup = Callable[[str, str, str], str | None]


def credential_refs(config: ProxyConfig) -> list[str]:
    """Every credential the config names: its backends', the backend specs a route's rollout
    arms pin (a stable arm may still use an older spec's credential), the client keys, the
    gateway's Redis password."""
    backends = list(config.backends)
    for route in config.routes:
        backends.extend(route.pinned_backends)
        if route.canary is not None:
            backends.extend(route.canary.pinned_backends)
    refs = {b.credential_ref for b in backends if b.credential_ref}
    refs.update(config.gateway.client_key_refs)
    if config.gateway.limits.redis_password_ref:  # the Redis shared by limits and the cache
        refs.add(config.gateway.limits.redis_password_ref)
    return sorted(refs)


def resolve_credentials(config: ProxyConfig, lookup: Lookup) -> dict[str, str]:
    """Map each credential ref of `config` to its value; refs without a value are left out
    (the proxy then answers as for a missing credential, never with someone else's)."""
    out: dict[str, str] = {}
    for ref in credential_refs(config):
        namespace, name, key = ref.split("/", 2)
        value = lookup(namespace, name, key)
        if value is not None:
            out[ref] = value
    return out


def secret_value(secret: Secret, key: str) -> str | None:
    """A Secret's value as the API server would store it: stringData wins over data.

    None for a SOPS-encrypted Secret and for any value that is SOPS ciphertext (a Secret
    applied without decryption): `ENC[…]` must never reach an upstream as a bearer token."""
    if secret.encrypted:
        return None
    if key in secret.string_data:
        value: str | None = secret.string_data[key]
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
