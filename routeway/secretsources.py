"""Other projects' documents that make a Secret in the cluster: ExternalSecret and SealedSecret.

Keeping credentials out of Git means the Secret a backend names is not among the files: the
External Secrets Operator makes it from an ExternalSecret (`external-secrets.io`), the Sealed
Secrets controller from a SealedSecret (`bitnami.com`). Read with `--skip-foreign`, such a
document declares that Secret: its namespace, its name and, where the document tells, its key
names, so a reference to it resolves, and a reference to a key it will not have is still
reported. Nothing here reads a value; these documents hold none, only references to a store
(ExternalSecret) or ciphertext (SealedSecret).

Lenient on purpose: these are other projects' objects, checked by their own webhooks. A
document that does not say which Secret it makes declares nothing and is skipped like any
other foreign document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EXTERNAL_SECRETS_GROUP = "external-secrets.io"
SEALED_SECRETS_GROUP = "bitnami.com"


@dataclass(frozen=True, slots=True)
class DeclaredSecret:
    """A Secret that a controller will make in the cluster from a document in the files."""

    namespace: str
    name: str
    keys: frozenset[str] | None  # None: the document does not tell (dataFrom, templateFrom, …)
    by: str  # the declaring document, `ExternalSecret/openai-key`
    source: str  # where that document is, `file#N`

    def __str__(self) -> str:
        keys = "keys not known" if self.keys is None else keys_text(self.keys)
        return f"{self.namespace}/{self.name} ({self.by}, {keys})"


def keys_text(keys: Iterable[str]) -> str:
    """`key a`, `keys a, b`: key names for a message (names only, never a value)."""
    names = sorted(keys)
    if not names:
        return "no keys"
    return ("key " if len(names) == 1 else "keys ") + ", ".join(names)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _string_keys(value: object) -> set[str]:
    return {k for k in _mapping(value) if isinstance(k, str)}


def _group(doc: Mapping[str, Any]) -> str:
    api_version = doc.get("apiVersion")
    return api_version.split("/", 1)[0] if isinstance(api_version, str) and "/" in api_version else ""


def declared_secret(doc: Mapping[str, Any], source: str) -> DeclaredSecret | None:
    """The Secret `doc` makes, or None when it is no ExternalSecret or SealedSecret, makes no
    Secret, or does not say which."""
    meta = _mapping(doc.get("metadata"))
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    kind, group, spec = doc.get("kind"), _group(doc), _mapping(doc.get("spec"))
    made: tuple[str, frozenset[str] | None] | None = None
    if kind == "ExternalSecret" and group == EXTERNAL_SECRETS_GROUP:
        made = _external_secret(name, spec)
    elif kind == "SealedSecret" and group == SEALED_SECRETS_GROUP:
        made = (name, _sealed_secret_keys(spec))
    if made is None:
        return None
    return DeclaredSecret(namespace, made[0], made[1], f"{kind}/{name}", source)


def _external_secret(name: str, spec: Mapping[str, Any]) -> tuple[str, frozenset[str] | None] | None:
    """Name and keys of the Secret an ExternalSecret makes, as the controller's ApplyTemplate
    builds it: `spec.data[].secretKey` (all of a `dataFrom` source: not known here), replaced
    by the template's keys unless its mergePolicy is Merge; existing keys are kept with
    creationPolicy Merge or CreateOrMerge. Nothing with creationPolicy None or a `manifest`
    target (a ConfigMap or another kind instead of a Secret)."""
    target = _mapping(spec.get("target"))
    policy = target.get("creationPolicy", "Owner")
    if policy == "None" or target.get("manifest") is not None:
        return None
    secret_name = target.get("name") or name
    if not isinstance(secret_name, str):
        return None
    data = spec.get("data")
    fetched: set[str] | None = {
        entry["secretKey"]
        for entry in (data if isinstance(data, list) else [])
        if isinstance(entry, Mapping) and isinstance(entry.get("secretKey"), str)
    }
    if spec.get("dataFrom"):
        fetched = None
    keys = fetched
    template = target.get("template")
    if isinstance(template, Mapping):
        templated: set[str] | None = _string_keys(template.get("data"))
        if template.get("templateFrom"):
            templated = None  # templateFrom can add any key
        if templated == set() or template.get("mergePolicy") == "Merge":
            keys = None if templated is None or fetched is None else templated | fetched
        else:
            keys = templated
    if policy in ("Merge", "CreateOrMerge"):
        keys = None  # the keys the Secret already had stay
    return secret_name, None if keys is None else frozenset(keys)


def _sealed_secret_keys(spec: Mapping[str, Any]) -> frozenset[str] | None:
    """Keys of the Secret a SealedSecret unseals to: `encryptedData` and the template's `data`.
    Its name and namespace are the SealedSecret's own (the controller overrides the
    template's). The deprecated `data` field seals a whole Secret: its keys are not known."""
    if spec.get("data") is not None:
        return None
    return frozenset(
        _string_keys(spec.get("encryptedData")) | _string_keys(_mapping(spec.get("template")).get("data"))
    )
