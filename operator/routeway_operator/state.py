"""The operator's shared in-memory state, kept in kopf's memo: indexes, API client, dirty set.

Which keys an event dirties (the whole of the "only affected gateways re-render" rule):

- a ModelRoute: the gateway it targets now and the one it targeted before (a moved route
  leaves one gateway and joins another), and the backends it names now and before (their
  route counts);
- a ModelBackend: itself, and the gateways of every route naming it (reverse index);
- a ModelClient: the gateway it targets now and the one it targeted before;
- a Secret: the backends, gateways and clients referencing it (reverse indexes), and through
  those backends their routes' gateways, through those clients their gateways;
- a ModelGateway: itself;
- an owned child (Deployment, ConfigMap, …) changed or deleted by someone else: its gateway.

Keys are `ObjectKey`s of kind ModelGateway or ModelBackend (a client's status is written by
its gateway's reconcile).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from routeway.client_usage import ClientUsage
from routeway.proxyconfig import ProxyConfig
from routeway.resources import ModelBackend, ModelClient, ModelGateway, ModelRoute
from routeway.rollout.observations import Sample
from routeway.translate import NsName, ObjectKey, Translation
from routeway_operator.apply import COMPARED_BY_CONTENT, HASH_ANNOTATION, PLURALS, Applier
from routeway_operator.events import EventRecorder
from routeway_operator.inventory import Entry, IndexLike, first, values
from routeway_operator.kube import KubeApi, path_for
from routeway_operator.metrics import OperatorMetrics
from routeway_operator.proxies import HttpProxyReader, ProxyReader
from routeway_operator.reconciler import Reconciler
from routeway_operator.relist import RelistAudit
from routeway_operator.revisions import RevisionStore
from routeway_operator.settings import OperatorSettings

GATEWAY = ModelGateway.KIND  # the kinds of reconcile keys
BACKEND = ModelBackend.KIND


@dataclass
class Indexes:
    """Live views of kopf's indexes (kopf updates them in place between handler calls)."""

    routes: IndexLike
    backends: IndexLike
    gateways: IndexLike
    secrets: IndexLike
    routes_by_gateway: IndexLike
    routes_by_backend: IndexLike
    backends_by_secret: IndexLike
    gateways_by_secret: IndexLike
    deployments: IndexLike
    clients: IndexLike
    clients_by_gateway: IndexLike
    clients_by_secret: IndexLike


@dataclass
class RouteMemory:
    gateway: NsName
    backends: tuple[str, ...]
    generation: int | None


@dataclass
class OperatorState:
    settings: OperatorSettings
    api: KubeApi
    indexes: Indexes
    applier: Applier
    events: EventRecorder
    reconciler: Reconciler = field(init=False)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    routes_seen: dict[NsName, RouteMemory] = field(default_factory=dict)
    revisions: dict[NsName, str] = field(default_factory=dict)  # last revision applied per gateway
    # Gateways whose stale config shards were looked for since start (reconcile/gateway.py).
    shards_swept: set[NsName] = field(default_factory=set)
    generations: dict[ObjectKey, int | None] = field(default_factory=dict)  # last spec seen
    status_written: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    # Last translation and render per gateway, by snapshot fingerprint: a resync or a proxy
    # readiness change re-renders nothing.
    renders: dict[NsName, tuple[Hashable, Translation, ProxyConfig]] = field(default_factory=dict)
    actions_seen: dict[ObjectKey, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # Rollouts: the one seam that reads proxy pods, the routes' ControllerRevisions, and per
    # gateway the samples of its proxies' observations (memory only: the rollout state itself
    # is in each route's status.rollout) and when they were last read.
    proxy_reader: ProxyReader = field(default_factory=HttpProxyReader)
    revision_store: RevisionStore = field(init=False)
    samples: dict[NsName, list[Sample]] = field(default_factory=dict)
    last_read: dict[NsName, float] = field(default_factory=dict)
    pod_revisions: dict[NsName, list[str | None]] = field(default_factory=dict)  # per ready pod read
    rollout_routes: dict[NsName, set[str]] = field(default_factory=dict)  # route ids with metrics
    clock: Callable[[], float] = time.time  # unix seconds, as the rollout state keeps them
    # ModelClients: the gateway each targeted when last seen (a moved client leaves one), and
    # per gateway when its proxies' /usage was last read and what they said, summed.
    clients_seen: dict[NsName, NsName] = field(default_factory=dict)
    usage_read: dict[NsName, float] = field(default_factory=dict)
    usage: dict[NsName, tuple[str, dict[str, ClientUsage]]] = field(default_factory=dict)
    # Deletions kopf missed while its watch was down (relist.py); set at startup.
    relist: RelistAudit | None = None

    def __post_init__(self) -> None:
        self.revision_store = RevisionStore(self.api)

    def start(self, reconcile: Callable[[OperatorState, Hashable], Awaitable[None]]) -> None:
        async def run(key: Hashable) -> None:
            await reconcile(self, key)

        self.reconciler = Reconciler(
            run, debounce=self.settings.debounce, workers=self.settings.workers, metrics=self.metrics
        )

    # --------------------------------------------------------------------- marking

    def mark_gateway(self, key: NsName) -> None:
        self.reconciler.mark(ObjectKey(GATEWAY, *key))

    def mark_backend(self, key: NsName) -> None:
        self.reconciler.mark(ObjectKey(BACKEND, *key))

    def spec_changed(self, key: ObjectKey, generation: int | None, deleted: bool) -> bool:
        """Whether an event carries a new spec (or a deletion); status-only events do not,
        which keeps our own status writes from re-triggering reconciles."""
        if deleted:
            self.generations.pop(key, None)
            self.status_written.pop(key, None)
            return True
        if generation is not None and key in self.generations and self.generations[key] == generation:
            return False
        self.generations[key] = generation
        return True

    def actions_changed(self, key: ObjectKey, actions: tuple[tuple[str, str], ...], deleted: bool) -> bool:
        """Whether a route's rollout action annotations changed (they move no generation)."""
        if deleted:
            self.actions_seen.pop(key, None)
            return True
        before = self.actions_seen.get(key, ())
        self.actions_seen[key] = actions
        return before != actions

    def on_deleted(self, kind: str, key: NsName) -> None:
        """An object found gone without a DELETED event (relist.py): what its event would do."""
        object_key = ObjectKey(kind, *key)
        if kind == ModelRoute.KIND:
            self.spec_changed(object_key, None, True)
            self.actions_changed(object_key, (), True)
            self.on_route(key, None)
        elif kind == ModelBackend.KIND:
            self.spec_changed(object_key, None, True)
            self.on_backend(key)
        elif kind == GATEWAY:
            self.spec_changed(object_key, None, True)
            self.mark_gateway(key)
        elif kind == ModelClient.KIND:
            self.spec_changed(object_key, None, True)
            self.on_client(key, None)
        else:
            self.on_secret(key)

    def on_children_listed(self, plural: str, live: set[str]) -> None:
        """Owned objects of a kind re-listed (relist.py): forget what we believe we wrote where
        nothing exists now, and reconcile the gateways, which re-create just those."""
        gone = [p for p in self.applier.known_paths() if f"/{plural}/" in p and p not in live]
        for path in gone:
            self.applier.forget(path)
        if gone:
            for gateway in list(self.indexes.gateways):
                self.mark_gateway(gateway)

    def on_route(self, key: NsName, entry: Entry | None) -> None:
        before = self.routes_seen.pop(key, None)
        if entry is not None and entry.gateway is not None:
            self.routes_seen[key] = RouteMemory(entry.gateway, entry.backends, entry.generation)
            self.mark_gateway(entry.gateway)
            for name in entry.backends:
                self.mark_backend((key[0], name))
        if before is not None:
            if entry is None or before.gateway != entry.gateway:
                self.mark_gateway(before.gateway)
            for name in before.backends:
                if entry is None or name not in entry.backends:
                    self.mark_backend((key[0], name))

    def on_client(self, key: NsName, entry: Entry | None) -> None:
        before = self.clients_seen.pop(key, None)
        if entry is not None and entry.gateway is not None:
            self.clients_seen[key] = entry.gateway
            self.mark_gateway(entry.gateway)
        if before is not None and (entry is None or entry.gateway != before):
            self.mark_gateway(before)

    def on_backend(self, key: NsName) -> None:
        self.mark_backend(key)
        for gateway in self.gateways_of_backend(key):
            self.mark_gateway(gateway)

    def gateways_of_backend(self, key: NsName) -> set[NsName]:
        gateways: set[NsName] = set()
        for route_key in values(self.indexes.routes_by_backend, key):
            route: Entry | None = first(self.indexes.routes, route_key)
            if route is not None and route.gateway is not None:
                gateways.add(route.gateway)
            elif route_key in self.routes_seen:
                gateways.add(self.routes_seen[route_key].gateway)
        return gateways

    def on_secret(self, key: NsName) -> None:
        for backend_key in set(values(self.indexes.backends_by_secret, key)):
            self.on_backend(backend_key)
        for gateway_key in set(values(self.indexes.gateways_by_secret, key)):
            self.mark_gateway(gateway_key)
        for client_key in set(values(self.indexes.clients_by_secret, key)):
            client: Entry | None = first(self.indexes.clients, client_key)
            if client is not None and client.gateway is not None:
                self.mark_gateway(client.gateway)
            elif client_key in self.clients_seen:
                self.mark_gateway(self.clients_seen[client_key])

    def on_child(self, body: Any, deleted: bool) -> None:
        """An owned object changed: re-check it unless it is exactly what we last wrote."""
        meta = body.get("metadata") or {}
        owner = next(
            (
                r
                for r in meta.get("ownerReferences") or []
                if r.get("kind") == GATEWAY and r.get("controller")
            ),
            None,
        )
        kind = body.get("kind")
        if owner is None or kind not in PLURALS:
            return
        path = path_for(body.get("apiVersion", "v1"), PLURALS[kind], meta.get("namespace"), meta.get("name"))
        annotations = meta.get("annotations") or {}
        gateway = (str(meta.get("namespace") or "default"), str(owner["name"]))
        written = self.applier.known(path)
        generation = meta.get("generation")
        if (
            deleted
            or written is None
            or annotations.get(HASH_ANNOTATION) != written.hash
            # someone else's edit that kept our annotation: a new spec generation, or any
            # change of a kind without one (ConfigMap, Secret, Service, ServiceAccount, Role,
            # RoleBinding); the re-apply then reads it and patches only if a field we set moved
            or (
                generation is not None and written.generation is not None and generation != written.generation
            )
            or (
                (kind in COMPARED_BY_CONTENT or kind in ("ConfigMap", "Secret"))
                and meta.get("resourceVersion") != written.resource_version
            )
        ):
            self.applier.forget(path)
            self.mark_gateway(gateway)
        elif kind == "Deployment":
            self.mark_gateway(gateway)  # replica readiness
