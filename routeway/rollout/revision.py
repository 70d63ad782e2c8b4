"""Route revisions: an immutable, content-hashed snapshot of what one route serves.

A revision is the route's routing fields (targets and weights, fallbacks, retries, timeout,
stickiness) together with the *resolved* specs of every backend those name (provider, url,
timeouts, limits, credential reference — never a credential value: `BackendConfig` has none).
So editing the route and editing a ModelBackend it uses both make a new revision, and during a
rollout the two arms can hold two different specs of the same backend name (the stable arm
keeps the old url or model).

Why built from the translated `RouteConfig` and `BackendConfig` (routeway.proxyconfig) and not
from the resources: those are already resolved (defaults applied, durations in seconds, ids),
so two spellings of the same intent hash alike, and an arm can be served straight from its
snapshot by the same renderer that serves a route today.

Left out of the hash on purpose: what governs usage rather than serving — a route's limits
and cache, a backend's pricing (raising a limit or a price is not a rollout) — and the
route's identity (id, name, namespace), its public model name (a name change is an
identity change, not something to split traffic over) and
`generation` (it moves on edits that change nothing served, such as the strategy itself).
The hash is taken over the document with default-valued fields dropped, so a field added to
the config schema later with a default leaves every existing revision's hash — and so every
route's rollout state — as it was.

Order: the weighted targets are hashed sorted (by backend, model, weight), because their order
serves nothing — a weighted pick and the sticky rendezvous hash depend only on the set of
targets and their weights — so listing them in another order is not a new revision to roll
out. The fallbacks keep their order: they are tried in it, so reordering them is a change.
The revision itself keeps the route as rendered; only the hashed document is sorted.

The hash is the ProxyConfig's recipe: sha256 over canonical JSON (sorted keys), 16 hex digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from routeway.proxyconfig import BackendConfig, RouteConfig

REVISION_SCHEMA = 1
"""Part of every hashed document: bumped only if the hashed content's meaning changes."""


@dataclass(frozen=True, slots=True)
class RevisionRef:
    """What the state machine needs of a revision: its hash and the backends it depends on
    (ids "namespace/name"), to tell whether it can still be restored."""

    hash: str
    backends: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteRevision:
    """The snapshot itself: enough to serve the route exactly as it was."""

    route: RouteConfig
    backends: tuple[BackendConfig, ...]  # sorted by id; only the ones the route references
    hash: str

    @property
    def ref(self) -> RevisionRef:
        return RevisionRef(self.hash, tuple(b.id for b in self.backends))

    def to_document(self) -> dict[str, Any]:
        """Full JSON-ready document (what a ControllerRevision's `data` would hold)."""
        return {
            "schema": REVISION_SCHEMA,
            "hash": self.hash,
            "route": self.route.model_dump(mode="json", by_alias=True),
            "backends": [b.model_dump(mode="json", by_alias=True) for b in self.backends],
        }


def build_revision(
    route: RouteConfig, backends: Mapping[str, BackendConfig] | Iterable[BackendConfig]
) -> RouteRevision:
    """The revision of `route` with the backends it references taken from `backends`.

    Raises ValueError when a referenced backend is missing: translation leaves unresolved
    backends out of a route, so a miss here is a caller's bug, not a user's mistake.
    """
    by_id = dict(backends) if isinstance(backends, Mapping) else {b.id: b for b in backends}
    wanted = sorted({t.backend for t in (*route.targets, *route.fallbacks)})
    missing = [b for b in wanted if b not in by_id]
    if missing:
        raise ValueError(f"route {route.id} references backends not given: {', '.join(missing)}")
    snapshot = tuple(by_id[b] for b in wanted)
    return RouteRevision(route, snapshot, revision_hash(route, snapshot))


def revision_hash(route: RouteConfig, backends: Iterable[BackendConfig]) -> str:
    content = {
        "schema": REVISION_SCHEMA,
        "routing": _routing_fields(route),
        "backends": [
            b.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"pricing"})
            for b in sorted(backends, key=lambda b: b.id)
        ],
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _routing_fields(route: RouteConfig) -> dict[str, Any]:
    doc = route.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for usage in ("limits", "cache"):  # usage, not routing: a new limit is not a rollout
        doc.pop(usage, None)
    for identity in (
        "id",
        "namespace",
        "name",
        "model",
        "generation",
        "revision",
        "pinnedBackends",
        "canary",
    ):
        doc.pop(identity, None)
    if "targets" in doc:  # weighted: their order serves nothing (fallbacks' order does)
        doc["targets"] = sorted(
            doc["targets"], key=lambda t: (t["backend"], t.get("model", ""), t.get("weight", 0))
        )
    return doc


def revision_from_document(doc: Mapping[str, Any]) -> RouteRevision:
    """Parse `RouteRevision.to_document()` back, checking the stored hash against the content
    (a snapshot edited by hand or written by another schema is refused, not served)."""
    if doc.get("schema") != REVISION_SCHEMA:
        raise ValueError(f"unsupported revision schema {doc.get('schema')!r}")
    route = RouteConfig.model_validate(doc["route"])
    backends = tuple(sorted((BackendConfig.model_validate(b) for b in doc["backends"]), key=lambda b: b.id))
    revision = build_revision(route, backends)
    if revision.hash != doc.get("hash"):
        raise ValueError(
            f"revision document hash {doc.get('hash')!r} does not match its content ({revision.hash})"
        )
    return revision
