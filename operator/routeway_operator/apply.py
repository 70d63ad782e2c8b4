"""Create-or-patch of desired objects, writing only when their content hash differs.

Each desired object gets a `routeway.dev/content-hash` annotation: the hash of everything
the operator sets. Applying compares that hash with what is known (in memory, else one GET)
and writes nothing when they agree, so an operator restart or a periodic resync over an
unchanged cluster writes nothing at all.

Conflicts are tolerated the way two racing handlers (or replicas) need: a create that meets
409 re-reads and patches; a patch that meets 404 creates. An object of the same name that the
gateway does not own is never taken over (PermanentError: the user must resolve it).

Merge patches (RFC 7386) replace lists wholesale, which is what a desired container list or
condition list means; keys of `data`/`binaryData` that are no longer desired are deleted
explicitly with nulls.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from routeway.resources import GROUP
from routeway_operator.kube import ApiError, KubeApi, path_for

HASH_ANNOTATION = f"{GROUP}/content-hash"
CHILD_KINDS: dict[str, tuple[str, str]] = {
    # kind: (apiVersion, plural) of everything a gateway owns; main.py watches these.
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Deployment": ("apps/v1", "deployments"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
}
PLURALS = {kind: plural for kind, (_, plural) in CHILD_KINDS.items()}
REPLACED_MAPS = ("data", "binaryData")


OwnerCheck = Callable[[], Awaitable[bool]]


class OwnerGone(Exception):
    """The owner disappeared while its children were being applied: stop, create nothing."""


def content_hash(obj: Mapping[str, Any]) -> str:
    body = copy.deepcopy(dict(obj))
    annotations = body.get("metadata", {}).get("annotations") or {}
    annotations.pop(HASH_ANNOTATION, None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def with_hash(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    out.setdefault("metadata", {}).setdefault("annotations", {})[HASH_ANNOTATION] = content_hash(obj)
    return out


def object_path(obj: Mapping[str, Any], *, collection: bool = False) -> str:
    meta = obj["metadata"]
    plural = PLURALS[obj["kind"]]
    return path_for(obj["apiVersion"], plural, meta.get("namespace"), None if collection else meta["name"])


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning `current` into `desired` for every field the operator owns."""
    patch = copy.deepcopy(dict(desired))
    for key in REPLACED_MAPS:
        old = current.get(key) or {}
        new = desired.get(key)
        if new is None and old:
            patch[key] = None
        elif new is not None:
            patch[key] = {**{k: None for k in old if k not in new}, **new}
    return patch


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []}


@dataclass(frozen=True)
class Written:
    """What the operator last wrote or verified at a path: enough to recognise its own echo
    in a watch event, and to notice someone else's edit that kept the hash annotation."""

    hash: str
    generation: int | None  # metadata.generation after our write (kinds with a spec)
    resource_version: str | None


COMPARED_BY_CONTENT = ("Service", "ServiceAccount", "Role", "RoleBinding")
"""Owned kinds whose edits no generation counts (or not reliably): drift is judged by content."""


def drifted(current: Mapping[str, Any], desired: Mapping[str, Any], expected_generation: int | None) -> bool:
    """Edited by someone else although the hash annotation still matches (kubectl edit keeps
    annotations): data of ConfigMaps/Secrets differs, the spec's generation moved on, or — for
    kinds without a generation (Service, ServiceAccount, Role, RoleBinding) — a field the
    operator sets no longer has its value (fields the API server or others add are allowed)."""
    kind = desired.get("kind")
    if kind in ("ConfigMap", "Secret"):
        return any((current.get(k) or {}) != (desired.get(k) or {}) for k in REPLACED_MAPS)
    generation = current.get("metadata", {}).get("generation")
    if kind in COMPARED_BY_CONTENT:
        return any(
            not contains(current.get(key), value)
            for key, value in desired.items()
            if key not in ("apiVersion", "kind", "metadata")
        )
    return expected_generation is not None and generation is not None and generation != expected_generation


EXACT_MAPPINGS = frozenset({"selector", "matchLabels", "roleRef"})
"""Mappings where an added key changes the meaning (a Service selecting fewer pods), not a
server default: compared whole."""


def contains(have: Any, want: Any) -> bool:
    """Whether `have` holds everything `want` sets: mappings key by key (a key in
    `EXACT_MAPPINGS`: whole), lists element by element (same length: a rule or port added by
    hand is drift), other values equal."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            (have.get(k) == v) if k in EXACT_MAPPINGS else contains(have.get(k), v) for k, v in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
    return bool(have == want)


class Applier:
    """Applies desired objects; remembers what it wrote to skip even the GET next time."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._known: dict[str, Written] = {}
        self._generations: dict[str, int] = {}  # survives `forget`: drift is judged against it

    def known(self, path: str) -> Written | None:
        return self._known.get(path)

    def known_hash(self, path: str) -> str | None:
        written = self._known.get(path)
        return written.hash if written else None

    def known_paths(self) -> list[str]:
        return list(self._known)

    def forget(self, path: str) -> None:
        self._known.pop(path, None)

    def forget_where(self, predicate: Callable[[str], bool]) -> None:
        """Forget what we wrote at matching paths: the next apply re-reads them (a resync)."""
        for path in [p for p in self._known if predicate(p)]:
            del self._known[path]

    async def apply(self, desired: Mapping[str, Any], *, owner_check: OwnerCheck | None = None) -> bool:
        """Create or patch `desired`; return whether anything was written. `owner_check` runs
        before a create and returns False when the owner is gone (then OwnerGone is raised)."""
        body = with_hash(desired)
        wanted = body["metadata"]["annotations"][HASH_ANNOTATION]
        path = object_path(body)
        if self.known_hash(path) == wanted:
            return False
        what = f"{body['kind']} {body['metadata'].get('namespace')}/{body['metadata']['name']}"
        try:
            written, result = await self._create_or_patch(body, path, wanted, what, owner_check)
        except ApiError as exc:
            self.forget(path)
            raise exc.to_kopf(f"applying {what}") from None
        meta = (result or {}).get("metadata") or {}
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
        self._known[path] = Written(wanted, generation, meta.get("resourceVersion"))
        if generation is not None:
            self._generations[path] = generation
        return written

    async def _create_or_patch(
        self, body: dict[str, Any], path: str, wanted: str, what: str, owner_check: OwnerCheck | None
    ) -> tuple[bool, dict[str, Any] | None]:
        for _ in range(3):
            current = await self.api.get(path)
            if current is None:
                # Watch streams of different kinds race: a child's deletion by the garbage
                # collector can arrive before its owner's. Never re-create for a gone owner.
                if owner_check is not None and not await owner_check():
                    raise OwnerGone(what)
                try:
                    return True, await self.api.create(object_path(body, collection=True), body)
                except ApiError as exc:
                    if exc.status != 409:  # created meanwhile by a racing writer: patch it
                        raise
                    continue
            self._check_ownership(current, body, what)
            annotations = current.get("metadata", {}).get("annotations") or {}
            if annotations.get(HASH_ANNOTATION) == wanted and not drifted(
                current, body, self._generations.get(path)
            ):
                return False, current
            try:
                return True, await self.api.patch(path, merge_patch(current, body))
            except ApiError as exc:
                if exc.status not in (404, 409):  # deleted meanwhile, or a stale precondition
                    raise
        raise kopf.TemporaryError(f"{what} kept changing while being applied", delay=1)

    @staticmethod
    def _check_ownership(current: Mapping[str, Any], desired: Mapping[str, Any], what: str) -> None:
        wanted = owner_uids(desired) - {""}
        if wanted and not wanted & owner_uids(current):
            raise kopf.PermanentError(f"{what} exists and is not owned by this gateway; rename or delete it")

    async def delete(self, obj: Mapping[str, Any]) -> bool:
        path = object_path(obj)
        self.forget(path)
        try:
            return await self.api.delete(path)
        except ApiError as exc:
            raise exc.to_kopf(f"deleting {path}") from None
