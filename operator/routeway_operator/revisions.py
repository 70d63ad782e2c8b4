"""Route revisions as ControllerRevisions: the snapshots a rollout serves its arms from.

One ControllerRevision (apps/v1) per revision of a route, in the route's namespace, named
`ROUTE-HASH`, labelled `routeway.dev/route: ROUTE`, owned by the ModelRoute (deleting the
route lets the garbage collector remove them), `data` = `RouteRevision.to_document()` and
`revision` = an integer, one more than the route's highest when it is made. The hash is the
identity; the integer is what people may name in `routeway.dev/undo` instead of the hash.

Why ControllerRevisions: the kind exists for exactly this (Deployments' and StatefulSets'
history), so `kubectl get controllerrevisions -l routeway.dev/route=chat` lists a route's
history and RBAC, quotas and backups already know it. Their `data` is never changed after
creation; a document whose hash does not match its content (edited by hand) is not served
(`revision_from_document` refuses it) and counts as missing.

Listing is one request per namespace per reconcile (label `routeway.dev/route` present), and
parsed documents are cached by uid and resourceVersion, so a resync re-parses nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routeway.resources import API_VERSION, GROUP, ModelRoute
from routeway.rollout.revision import RouteRevision, revision_from_document
from routeway_operator.inventory import Entry
from routeway_operator.kube import ApiError, KubeApi, path_for

log = logging.getLogger("routeway.operator.revisions")

ROUTE_LABEL = f"{GROUP}/route"
HASH_LABEL = f"{GROUP}/revision-hash"
API = "apps/v1"
PLURAL = "controllerrevisions"
MAX_NAME = 253
MAX_LABEL = 63


def label_value(route_name: str) -> str:
    """The route's name as a label value (63 characters at most: longer names are shortened
    with a hash of the whole, so two long names never share a label)."""
    if len(route_name) <= MAX_LABEL:
        return route_name
    digest = hashlib.sha256(route_name.encode()).hexdigest()[:8]
    return f"{route_name[: MAX_LABEL - 9].rstrip('-._')}-{digest}"


def revision_name(route_name: str, revision_hash: str) -> str:
    return f"{route_name[: MAX_NAME - len(revision_hash) - 1]}-{revision_hash}"


def build_controller_revision(route: Entry, revision: RouteRevision, number: int) -> dict[str, Any]:
    """The desired ControllerRevision of one route revision (pure)."""
    return {
        "apiVersion": API,
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(route.name, revision.hash),
            "namespace": route.namespace,
            "labels": {
                ROUTE_LABEL: label_value(route.name),
                HASH_LABEL: revision.hash,
                "app.kubernetes.io/managed-by": "routeway",
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": ModelRoute.KIND,
                    "name": route.name,
                    "uid": route.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": revision.to_document(),
        "revision": number,
    }


@dataclass(frozen=True)
class StoredRevision:
    """One ControllerRevision of a route as found: `revision` None when its data is refused."""

    name: str
    number: int
    hash: str
    revision: RouteRevision | None
    owner_uid: str = ""  # the ModelRoute's uid: a re-created route of the same name is another


class RevisionStore:
    """Reads and writes routes' ControllerRevisions; remembers parsed documents."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._parsed: dict[tuple[str, str], RouteRevision | None] = {}  # (uid, resourceVersion)

    async def list(self, namespaces: Iterable[str]) -> dict[tuple[str, str], dict[str, StoredRevision]]:
        """Every route revision in `namespaces`: (namespace, route name) → hash → stored."""
        out: dict[tuple[str, str], dict[str, StoredRevision]] = {}
        seen: set[tuple[str, str]] = set()
        for namespace in sorted(set(namespaces)):
            try:
                listing = await self._api.get(
                    path_for(API, PLURAL, namespace), params={"labelSelector": ROUTE_LABEL}
                )
            except ApiError as exc:
                raise exc.to_kopf(f"listing ControllerRevisions in {namespace}") from None
            for item in (listing or {}).get("items") or []:
                stored = self._read(item, seen)
                if stored is None:
                    continue
                owner = _owner_route(item)
                if owner is not None:
                    out.setdefault((namespace, owner[0]), {})[stored.hash] = StoredRevision(
                        stored.name, stored.number, stored.hash, stored.revision, owner[1]
                    )
        self._parsed = {k: v for k, v in self._parsed.items() if k in seen}
        return out

    def _read(self, item: Mapping[str, Any], seen: set[tuple[str, str]]) -> StoredRevision | None:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        key = (str(meta.get("uid")), str(meta.get("resourceVersion")))
        seen.add(key)
        if key not in self._parsed:
            try:
                self._parsed[key] = revision_from_document(item.get("data") or {})
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "ControllerRevision %s/%s is not served: %s", meta.get("namespace"), meta.get("name"), exc
                )
                self._parsed[key] = None
        parsed = self._parsed[key]
        labelled = (meta.get("labels") or {}).get(HASH_LABEL)
        revision_hash = parsed.hash if parsed is not None else str(labelled or meta.get("name"))
        number = item.get("revision")
        return StoredRevision(
            str(meta.get("name")), number if isinstance(number, int) else 0, revision_hash, parsed
        )

    async def create(self, route: Entry, revision: RouteRevision, number: int) -> None:
        """Store one revision; one that exists already (a racing replica, a stale list) is fine."""
        body = build_controller_revision(route, revision, number)
        try:
            await self._api.create(path_for(API, PLURAL, route.namespace), body)
        except ApiError as exc:
            if exc.status != 409:
                raise exc.to_kopf(f"creating ControllerRevision {body['metadata']['name']}") from None

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await self._api.delete(path_for(API, PLURAL, namespace, name))
        except ApiError as exc:
            raise exc.to_kopf(f"deleting ControllerRevision {namespace}/{name}") from None


def _owner_route(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the ModelRoute owning a ControllerRevision."""
    for ref in (item.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == ModelRoute.KIND and ref.get("name"):
            return str(ref["name"]), str(ref.get("uid") or "")
    return None
