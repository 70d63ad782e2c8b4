"""A Secret key that a served object needs and that its Secret lost keeps its last good value,
as `routeway serve` does (routeway.local_memory).

The operator reads users' Secrets and writes each gateway's credentials Secret from them. A
Secret edited so that it lacks the key a backend (or the limits' Redis password) uses would
otherwise make that backend SecretKeyNotFound, drop it from the config,
blank its credential, and leave its routes answering 503, although the credential had a good
previous value: the one in the credentials Secret the proxies read now. That value keeps
serving; the object still reports the problem (its ResolvedRefs condition says
SecretKeyNotFound, from its own reconcile), and a Warning Event on the gateway names the
Secret and key (never a value). A rotation (the key present, a new value) takes effect as
before. Keys the gateway accepts (client keys) are never kept: removing one revokes it. A
deleted Secret is gone, like a deleted object: nothing is kept for it. Values are
read from the API when needed and never kept in the operator's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from routeway.configstore import decode_credentials
from routeway.local_memory import wanted_keys
from routeway.translate import Inventory, NsName
from routeway_operator import builders
from routeway_operator.kube import ApiError, path_for
from routeway_operator.state import OperatorState

KEPT_REASON = "SecretKeyKeptLastGood"


@dataclass(frozen=True)
class Kept:
    """Credential refs whose Secret lost the key, served with the credentials Secret's value."""

    values: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentialRef → value

    @property
    def refs(self) -> frozenset[str]:
        return frozenset(self.values)

    def message(self) -> str:
        names = ", ".join(sorted(self.values))
        return f"Secret key(s) {names} no longer exist; serving their last good value until fixed or unused"


def lost_refs(inventory: Inventory) -> dict[str, NsName]:
    """Credential refs (`ns/secret/key`) objects ask for whose Secret exists without that key."""
    objects = [
        *inventory.backends.values(),
        *inventory.clients.values(),
        *inventory.gateways.values(),
    ]
    lost: dict[str, NsName] = {}
    for secret, keys in wanted_keys(objects).items():
        have = inventory.secret_keys.get((secret.namespace, secret.name))
        if have is None:
            continue  # no such Secret (deleted): gone, nothing kept
        for key in keys:
            if key not in have:
                lost[f"{secret.namespace}/{secret.name}/{key}"] = (secret.namespace, secret.name)
    return lost


async def kept_credentials(state: OperatorState, gateway: NsName, inventory: Inventory) -> Kept:
    """The lost refs that the gateway's credentials Secret still holds, with their values.
    Reads that Secret only when some key is lost (the common case costs nothing)."""
    lost = lost_refs(inventory)
    if not lost:
        return Kept()
    name = builders.ChildNames.of(gateway[1]).secret
    try:
        current = await state.api.get(path_for("v1", "secrets", gateway[0], name))
    except ApiError as exc:
        raise exc.to_kopf(f"reading Secret {gateway[0]}/{name}") from None
    held, _ = decode_credentials((current or {}).get("data"))
    return Kept({ref: held[ref] for ref in sorted(lost) if ref in held})


def with_kept_keys(inventory: Inventory, kept: Kept) -> Inventory:
    """`inventory` as if each kept key were still in its Secret, so translation keeps the
    objects using it."""
    if not kept.values:
        return inventory
    keys = {k: set(v) for k, v in inventory.secret_keys.items()}
    for ref in kept.values:
        namespace, name, key = ref.split("/", 2)
        keys.setdefault((namespace, name), set()).add(key)
    return replace(inventory, secret_keys={k: frozenset(v) for k, v in keys.items()})
