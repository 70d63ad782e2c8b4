"""Index entries and per-gateway snapshots: what kopf's in-memory indexes hold, and how one
gateway's slice of them becomes a `routeway.translate.Inventory`.

Why indexes: every watch event updates one entry in memory; a reconcile then reads a
consistent snapshot of just the objects its gateway depends on (the gateway, the routes
targeting it, the backends those name, the Secrets those name) without listing anything
from the API. Translating only that slice keeps a change to one route from re-translating
10,000 routes of other gateways, and gives the same verdicts as a whole-cluster translation
because nothing outside the slice can affect them.

ModelClients ride along like routes: those naming the gateway, and the Secrets of their keys
(key names only).

Parsing happens once per event, here: an object that fails to parse is kept as an entry with
its error, so the reconcile can report it on the object (Accepted=False, Invalid) and still
render everything else.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from routeway.manifests import ObjectError, parse_object
from routeway.resources import API_VERSION, GROUP, ModelBackend, ModelClient, ModelGateway, ModelRoute
from routeway.translate import Inventory, NsName, ObjectKey

Model: TypeAlias = ModelBackend | ModelRoute | ModelGateway | ModelClient
IndexLike: TypeAlias = Mapping[Any, Iterable[Any]]


@dataclass(frozen=True)
class Entry:
    """One custom resource as the operator remembers it between events."""

    kind: str
    namespace: str
    name: str
    model: Model | None  # None: failed to parse (see `error`)
    error: str | None
    generation: int | None
    uid: str
    status: Mapping[str, Any] = field(default_factory=dict)
    gateway: NsName | None = None  # routes and clients: the gateway they target
    backends: tuple[str, ...] = ()  # routes: backend names referenced (weighted, then fallbacks)
    secret: str | None = None  # backends, gateways and clients: the Secret they reference
    actions: tuple[tuple[str, str], ...] = ()  # routes: rollout action annotations (name, value)

    @property
    def key(self) -> NsName:
        return (self.namespace, self.name)

    @property
    def object_key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.namespace, self.name)

    def reference(self) -> dict[str, str]:
        """The object as an Event's involvedObject names it."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


def _get(body: Mapping[str, Any], *path: str) -> Any:
    current: Any = body
    for part in path:
        current = current.get(part) if isinstance(current, Mapping) else None
    return current


def route_target(body: Mapping[str, Any]) -> NsName:
    """The gateway a route (or client) names, read leniently so even an invalid one is attributed."""
    namespace = str(_get(body, "metadata", "namespace") or "default")
    ref = _get(body, "spec", "gatewayRef")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
        return (namespace, "default")
    ref_ns = ref.get("namespace")
    return (ref_ns if isinstance(ref_ns, str) and ref_ns else namespace, ref["name"])


def gateway_targets(body: Mapping[str, Any]) -> tuple[NsName, ...]:
    """The gateway a route or client names, and the one its last good version (status.lastGood)
    names, which it keeps serving on while its newest version has a problem (a gatewayRef typo)."""
    namespace = str(_get(body, "metadata", "namespace") or "default")
    older = last_good_target(namespace, _get(body, "status") or {})
    return tuple(dict.fromkeys(t for t in (route_target(body), older) if t is not None))


def last_good_target(namespace: str, status: Mapping[str, Any]) -> NsName | None:
    """The gateway the last good version in `status` names (None: there is none)."""
    last_good = status.get("lastGood") if isinstance(status, Mapping) else None
    spec = last_good.get("spec") if isinstance(last_good, Mapping) else None
    return (
        route_target({"metadata": {"namespace": namespace}, "spec": spec})
        if isinstance(spec, Mapping)
        else None
    )


def serving_gateway(entry: Entry, gateways: IndexLike) -> NsName | None:
    """The one gateway whose reconcile owns a route or client indexed under several
    (`gateway_targets`): the gateway its newest version names when that one exists, else the
    one its last good version names when that one exists (a gatewayRef typo keeps serving
    there), else the newest's (reported as not found, as before). A route moved to another
    existing gateway belongs to that gateway only."""
    if entry.gateway is None or first(gateways, entry.gateway) is not None:
        return entry.gateway
    older = last_good_target(entry.namespace, entry.status)
    return older if older is not None and first(gateways, older) is not None else entry.gateway


def route_backends(body: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for section in ("backends", "fallbacks"):
        items = _get(body, "spec", section)
        for item in items if isinstance(items, list) else []:
            name = item.get("name") if isinstance(item, Mapping) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return tuple(names)


def referenced_secret(kind: str, body: Mapping[str, Any]) -> str | None:
    if kind == ModelBackend.KIND:
        name = _get(body, "spec", "apiKeySecretRef", "name")
    elif kind == ModelGateway.KIND:
        name = _get(body, "spec", "auth", "apiKeySecretRef", "name")
    elif kind == ModelClient.KIND:
        name = _get(body, "spec", "keySecretRef", "name")
    else:
        return None
    return name if isinstance(name, str) else None


ACTION_ANNOTATIONS = {
    f"{GROUP}/promote": "promote",
    f"{GROUP}/promote-full": "promote-full",
    f"{GROUP}/abort": "abort",
    f"{GROUP}/retry": "retry",
    f"{GROUP}/undo": "undo",
}
"""A route's manual rollout actions (pinned by issue 12): each value is a free token, handled
once; `undo`'s value names the revision (its hash, or its ControllerRevision number)."""


def route_actions(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    annotations = _get(body, "metadata", "annotations")
    if not isinstance(annotations, Mapping):
        return ()
    return tuple(
        sorted(
            (ACTION_ANNOTATIONS[k], str(v).strip())
            for k, v in annotations.items()
            if k in ACTION_ANNOTATIONS and str(v).strip()
        )
    )


def build_entry(kind: str, body: Mapping[str, Any]) -> Entry:
    """Parse an API object (status aside: it is ours, and must not make the object invalid)."""
    raw = {k: copy.deepcopy(v) for k, v in body.items() if k != "status"}
    raw.setdefault("kind", kind)
    raw.setdefault("apiVersion", API_VERSION)
    meta = body.get("metadata") or {}
    model: Model | None = None
    error: str | None = None
    try:
        parsed = parse_object(raw)
    except ObjectError as exc:
        error = str(exc)
    else:
        assert isinstance(parsed, ModelBackend | ModelRoute | ModelGateway | ModelClient)
        model = parsed
    status = body.get("status")
    generation = meta.get("generation")
    return Entry(
        kind=kind,
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        model=model,
        error=error,
        generation=int(generation) if isinstance(generation, int) else None,
        uid=str(meta.get("uid") or ""),
        status=copy.deepcopy(dict(status)) if isinstance(status, Mapping) else {},
        gateway=route_target(body) if kind in (ModelRoute.KIND, ModelClient.KIND) else None,
        backends=route_backends(body) if kind == ModelRoute.KIND else (),
        secret=referenced_secret(kind, body),
        actions=route_actions(body) if kind == ModelRoute.KIND else (),
    )


def secrets_named(entry: Entry) -> tuple[str, ...]:
    """The Secrets an entry's snapshot needs: the one its spec names, and the one its last good
    version (status.lastGood, routeway_operator.reconcile.lastgood) names, which serves while
    the newest has a problem."""
    last_good = entry.status.get("lastGood")
    older = (
        referenced_secret(entry.kind, {"spec": last_good.get("spec")})
        if isinstance(last_good, Mapping)
        else None
    )
    return tuple(dict.fromkeys(name for name in (entry.secret, older) if name))


def first(index: IndexLike, key: Any) -> Any:
    """The single value an index holds under `key` (indexes here are keyed by identity)."""
    store = index.get(key) if hasattr(index, "get") else None
    if store is None:
        return None
    return next(iter(store), None)


def values(index: IndexLike, key: Any) -> list[Any]:
    store = index.get(key) if hasattr(index, "get") else None
    return list(store) if store is not None else []


@dataclass(frozen=True)
class GatewaySnapshot:
    """Everything one gateway's reconcile reads, copied out of the indexes at one moment."""

    key: NsName
    gateway: Entry | None
    routes: tuple[Entry, ...]
    backends: Mapping[NsName, Entry]
    secret_keys: Mapping[NsName, frozenset[str]]
    clients: tuple[Entry, ...] = ()

    def fingerprint(self) -> Hashable | None:
        """Equal fingerprints: translation and rendering give the same result (specs are
        identified by uid and generation, Secrets by key names). None: cannot tell."""
        entries = self._entries()
        if any(e.generation is None for e in entries):
            return None
        return (
            frozenset((e.object_key, e.uid, e.generation, e.error) for e in entries),
            frozenset(self.secret_keys.items()),
        )

    def inventory(self) -> Inventory:
        entries = self._entries()
        return Inventory(
            backends={e.key: e.model for e in entries if isinstance(e.model, ModelBackend)},
            routes={e.key: e.model for e in entries if isinstance(e.model, ModelRoute)},
            gateways={e.key: e.model for e in entries if isinstance(e.model, ModelGateway)},
            secret_keys=dict(self.secret_keys),
            invalid={e.object_key: e.error for e in entries if e.error is not None},
            clients={e.key: e.model for e in entries if isinstance(e.model, ModelClient)},
        )

    def _entries(self) -> list[Entry]:
        everything = (self.gateway, *self.routes, *self.backends.values(), *self.clients)
        return [e for e in everything if e is not None]


def snapshot_gateway(
    key: NsName,
    *,
    gateways: IndexLike,
    routes: IndexLike,
    routes_by_gateway: IndexLike,
    backends: IndexLike,
    secrets: IndexLike,
    clients: IndexLike | None = None,
    clients_by_gateway: IndexLike | None = None,
) -> GatewaySnapshot:
    gateway: Entry | None = first(gateways, key)
    route_entries = sorted(
        (
            e
            for e in (first(routes, rk) for rk in set(values(routes_by_gateway, key)))
            if e is not None and serving_gateway(e, gateways) == key
        ),
        key=lambda e: e.key,
    )
    backend_entries: dict[NsName, Entry] = {}
    for route in route_entries:
        # and those its last good version names, which serves while its newest has a problem
        last_good = route.status.get("lastGood")
        older = route_backends({"spec": last_good.get("spec")}) if isinstance(last_good, Mapping) else ()
        for name in dict.fromkeys((*route.backends, *older)):
            entry = first(backends, (route.namespace, name))
            if entry is not None:
                backend_entries[entry.key] = entry
    client_entries = sorted(
        (
            e
            for e in (first(clients or {}, ck) for ck in set(values(clients_by_gateway or {}, key)))
            if e is not None and serving_gateway(e, gateways) == key
        ),
        key=lambda e: e.key,
    )
    secret_names = {
        (e.namespace, name)
        for e in (*backend_entries.values(), *client_entries, *([gateway] if gateway else []))
        for name in secrets_named(e)
    }
    secret_keys = {}
    for sk in sorted(secret_names):
        keys = first(secrets, sk)
        if keys is not None:
            secret_keys[sk] = keys
    return GatewaySnapshot(
        key, gateway, tuple(route_entries), backend_entries, secret_keys, tuple(client_entries)
    )


def snapshot_backend(
    key: NsName, *, backends: IndexLike, secrets: IndexLike
) -> tuple[Entry | None, Inventory]:
    entry: Entry | None = first(backends, key)
    if entry is None:
        return None, Inventory()
    secret_keys = {}
    for name in secrets_named(entry):
        keys = first(secrets, (entry.namespace, name))
        if keys is not None:
            secret_keys[(entry.namespace, name)] = keys
    inv = Inventory(
        backends={entry.key: entry.model} if isinstance(entry.model, ModelBackend) else {},
        secret_keys=secret_keys,
        invalid={entry.object_key: entry.error} if entry.error else {},
    )
    return entry, inv
