"""kopf registrations, and nothing else: every handler delegates at once.

`create_registry` builds a fresh registry instead of decorating kopf's global one, so a test
can run an operator with a test-only login handler, and two operators in one process do not
share handlers. Production uses kopf's `SmartOperatorRegistry` (logins from in-cluster
config or KUBECONFIG).

What is registered:
- indexes: routes, backends, gateways, clients (parsed entries), Secrets (key names only,
  never values), reverse lookups (routes and clients by gateway, routes by backend, backends,
  gateways and clients by Secret) and the proxy Deployments' readiness;
- event handlers that only mark keys dirty (state.py says which), and tell the re-list audit
  what they saw (relist.py: deletions kopf misses across a re-list; the indexes reconciles
  read hide what it finds);
- startup/cleanup: kopf settings (finalizer and annotation prefix under routeway.dev, watch
  timeouts), the API client and the reconciler task;
- a resync timer per gateway (peering-aware).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from routeway.resources import GROUP, VERSION, ModelBackend, ModelClient, ModelGateway, ModelRoute
from routeway.translate import ObjectKey
from routeway_operator.apply import CHILD_KINDS, Applier
from routeway_operator.builders import MANAGED_BY, ChildNames
from routeway_operator.events import EventRecorder
from routeway_operator.inventory import (
    build_entry,
    first,
    gateway_targets,
    referenced_secret,
    route_backends,
)
from routeway_operator.kube import KubeApi
from routeway_operator.proxies import HttpProxyReader, ProxyReader
from routeway_operator.reconcile.gateway import reconcile
from routeway_operator.relist import Ghosts, HidingIndex, RelistAudit
from routeway_operator.settings import ANNOTATION_PREFIX, FINALIZER, OperatorSettings
from routeway_operator.state import Indexes, OperatorState

log = logging.getLogger("routeway.operator")

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
SECRET = "Secret"
# Owned kinds watched for drift; Secrets are not among them: `secret_event` sees every Secret.
CHILD_RESOURCES = tuple((api, plural) for kind, (api, plural) in CHILD_KINDS.items() if kind != "Secret")
INDEX_NAMES = (
    "rw_routes",
    "rw_backends",
    "rw_gateways",
    "rw_secrets",
    "rw_routes_by_gateway",
    "rw_routes_by_backend",
    "rw_backends_by_secret",
    "rw_gateways_by_secret",
    "rw_deployments",
    "rw_clients",
    "rw_clients_by_gateway",
    "rw_clients_by_secret",
)
Connect = Callable[[], Awaitable[KubeApi]]
AUDITED = {
    ModelRoute.KIND: (f"{GROUP}/{VERSION}", ModelRoute.PLURAL),
    ModelBackend.KIND: (f"{GROUP}/{VERSION}", ModelBackend.PLURAL),
    ModelGateway.KIND: (f"{GROUP}/{VERSION}", ModelGateway.PLURAL),
    ModelClient.KIND: (f"{GROUP}/{VERSION}", ModelClient.PLURAL),
    SECRET: ("v1", "secrets"),
}
"""Kinds whose deletions missed during a watch outage are looked for after kopf re-lists them."""
AUDITED_INDEXES = {
    ModelRoute.KIND: "rw_routes",
    ModelBackend.KIND: "rw_backends",
    ModelGateway.KIND: "rw_gateways",
    ModelClient.KIND: "rw_clients",
    SECRET: "rw_secrets",
}
REVERSE_INDEXES = {
    "rw_routes_by_gateway": ModelRoute.KIND,
    "rw_routes_by_backend": ModelRoute.KIND,
    "rw_backends_by_secret": ModelBackend.KIND,
    "rw_gateways_by_secret": ModelGateway.KIND,
    "rw_clients_by_gateway": ModelClient.KIND,
    "rw_clients_by_secret": ModelClient.KIND,
}


def hiding(index: Any, ghosts: Ghosts, name: str) -> Any:
    """kopf's index as reconciles see it: without objects found deleted behind its back."""
    for kind, index_name in AUDITED_INDEXES.items():
        if index_name == name:
            return HidingIndex(index, ghosts, kind, by_key=True)
    if name in REVERSE_INDEXES:
        return HidingIndex(index, ghosts, REVERSE_INDEXES[name], by_key=False)
    return index


def _ns(namespace: str | None) -> str:
    return namespace or "default"


def seen(state: OperatorState, kind: str, key: tuple[str, str], event_type: str | None) -> None:
    if state.relist is not None:
        state.relist.seen(kind, key, event_type)


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    """Own finalizer and annotation prefix (never kopf's defaults) and timeouts; peering is
    decided before kopf starts (peering.py) and given to `kopf.operator`."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 60
    settings.posting.level = logging.WARNING


def create_registry(
    config: OperatorSettings,
    *,
    registry: kopf.OperatorRegistry | None = None,
    connect: Connect | None = None,
    proxy_reader: ProxyReader | None = None,
) -> kopf.OperatorRegistry:
    """`proxy_reader`: how proxy pods' admin ports are read (tests give a stand-in)."""
    reg = registry if registry is not None else kopf.get_default_registry()
    connect_api: Connect = connect if connect is not None else KubeApi.connect

    def state_of(memo: Any) -> OperatorState:
        state: OperatorState = memo.routeway
        return state

    # ------------------------------------------------------------------ lifecycle

    @kopf.on.startup(registry=reg)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
        configure_kopf(settings, config)
        api = await connect_api()
        ghosts = Ghosts()
        indexes = Indexes(
            **{name.removeprefix("rw_"): hiding(kwargs[name], ghosts, name) for name in INDEX_NAMES}
        )
        state = OperatorState(
            config,
            api,
            indexes,
            Applier(api),
            EventRecorder(api),
            proxy_reader=proxy_reader if proxy_reader is not None else HttpProxyReader(),
        )
        state.start(reconcile)
        state.relist = RelistAudit(
            api,
            AUDITED,
            {kind: kwargs[index] for kind, index in AUDITED_INDEXES.items()},
            config.namespaces,
            state.on_deleted,
            ghosts=ghosts,
            children={plural: api_version for _kind, (api_version, plural) in CHILD_KINDS.items()},
            children_listed=state.on_children_listed,
            child_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
        )
        if config.metrics_port:
            state.metrics.serve(config.metrics_port)
        memo.routeway = state
        memo.routeway_tasks = [
            asyncio.create_task(state.reconciler.run(), name="routeway reconciler"),
        ]

    @kopf.on.cleanup(registry=reg)
    async def cleanup(memo: Any, **_: Any) -> None:
        tasks = getattr(memo, "routeway_tasks", [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state = getattr(memo, "routeway", None)
        if state is not None:
            if state.relist is not None:
                await state.relist.close()
            await state.api.close()
            await state.proxy_reader.close()
            state.metrics.close()

    # ------------------------------------------------------------------ indexes

    @kopf.index(GROUP, VERSION, ModelRoute.PLURAL, id="rw_routes", registry=reg)
    async def index_routes(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        entry = build_entry(ModelRoute.KIND, body)
        return {entry.key: entry}

    @kopf.index(GROUP, VERSION, ModelRoute.PLURAL, id="rw_routes_by_gateway", registry=reg)
    async def index_routes_by_gateway(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        return dict.fromkeys(gateway_targets(body), (_ns(namespace), name))

    @kopf.index(GROUP, VERSION, ModelRoute.PLURAL, id="rw_routes_by_backend", registry=reg)
    async def index_routes_by_backend(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        return {(_ns(namespace), backend): (_ns(namespace), name) for backend in route_backends(body)}

    @kopf.index(GROUP, VERSION, ModelBackend.PLURAL, id="rw_backends", registry=reg)
    async def index_backends(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        entry = build_entry(ModelBackend.KIND, body)
        return {entry.key: entry}

    @kopf.index(GROUP, VERSION, ModelBackend.PLURAL, id="rw_backends_by_secret", registry=reg)
    async def index_backends_by_secret(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        secret = referenced_secret(ModelBackend.KIND, body)
        return {(_ns(namespace), secret): (_ns(namespace), name)} if secret else {}

    @kopf.index(GROUP, VERSION, ModelGateway.PLURAL, id="rw_gateways", registry=reg)
    async def index_gateways(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        entry = build_entry(ModelGateway.KIND, body)
        return {entry.key: entry}

    @kopf.index(GROUP, VERSION, ModelGateway.PLURAL, id="rw_gateways_by_secret", registry=reg)
    async def index_gateways_by_secret(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        secret = referenced_secret(ModelGateway.KIND, body)
        return {(_ns(namespace), secret): (_ns(namespace), name)} if secret else {}

    @kopf.index(GROUP, VERSION, ModelClient.PLURAL, id="rw_clients", registry=reg)
    async def index_clients(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        entry = build_entry(ModelClient.KIND, body)
        return {entry.key: entry}

    @kopf.index(GROUP, VERSION, ModelClient.PLURAL, id="rw_clients_by_gateway", registry=reg)
    async def index_clients_by_gateway(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        return dict.fromkeys(gateway_targets(body), (_ns(namespace), name))

    @kopf.index(GROUP, VERSION, ModelClient.PLURAL, id="rw_clients_by_secret", registry=reg)
    async def index_clients_by_secret(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[Any, Any]:
        secret = referenced_secret(ModelClient.KIND, body)
        return {(_ns(namespace), secret): (_ns(namespace), name)} if secret else {}

    @kopf.index("v1", "secrets", id="rw_secrets", registry=reg)
    async def index_secrets(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
        keys = frozenset(body.get("data") or {}) | frozenset(body.get("stringData") or {})
        return {(_ns(namespace), name): keys}

    @kopf.index("apps", "v1", "deployments", labels=MANAGED, id="rw_deployments", registry=reg)
    async def index_deployments(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Any, Any]:
        owner = next(
            (
                r
                for r in body.get("metadata", {}).get("ownerReferences") or []
                if r.get("kind") == ModelGateway.KIND
            ),
            None,
        )
        if owner is None:
            return {}
        return {
            (_ns(namespace), owner["name"]): {
                "metadata": {"generation": body.get("metadata", {}).get("generation")},
                "status": dict(body.get("status") or {}),
            }
        }

    # ------------------------------------------------------------------ events → dirty keys

    @kopf.on.event(GROUP, VERSION, ModelRoute.PLURAL, registry=reg)
    async def route_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        state = state_of(memo)
        namespace = _ns(namespace)
        seen(state, ModelRoute.KIND, (namespace, name), type)
        deleted = type == "DELETED"
        entry = None if deleted else first(state.indexes.routes, (namespace, name))
        generation = entry.generation if entry is not None else None
        key = ObjectKey(ModelRoute.KIND, namespace, name)
        actions = entry.actions if entry is not None else ()
        # `|` not `or`: both remember what they saw
        if state.spec_changed(key, generation, deleted) | state.actions_changed(key, actions, deleted):
            state.on_route((namespace, name), entry)

    @kopf.on.event(GROUP, VERSION, ModelBackend.PLURAL, registry=reg)
    async def backend_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        state = state_of(memo)
        namespace = _ns(namespace)
        seen(state, ModelBackend.KIND, (namespace, name), type)
        deleted = type == "DELETED"
        entry = None if deleted else first(state.indexes.backends, (namespace, name))
        generation = entry.generation if entry is not None else None
        if state.spec_changed(ObjectKey(ModelBackend.KIND, namespace, name), generation, deleted):
            state.on_backend((namespace, name))

    @kopf.on.event(GROUP, VERSION, ModelGateway.PLURAL, registry=reg)
    async def gateway_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        state = state_of(memo)
        namespace = _ns(namespace)
        seen(state, ModelGateway.KIND, (namespace, name), type)
        deleted = type == "DELETED"
        entry = None if deleted else first(state.indexes.gateways, (namespace, name))
        generation = entry.generation if entry is not None else None
        if state.spec_changed(ObjectKey(ModelGateway.KIND, namespace, name), generation, deleted):
            state.mark_gateway((namespace, name))

    @kopf.on.event(GROUP, VERSION, ModelClient.PLURAL, registry=reg)
    async def client_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        state = state_of(memo)
        namespace = _ns(namespace)
        seen(state, ModelClient.KIND, (namespace, name), type)
        deleted = type == "DELETED"
        entry = None if deleted else first(state.indexes.clients, (namespace, name))
        generation = entry.generation if entry is not None else None
        if state.spec_changed(ObjectKey(ModelClient.KIND, namespace, name), generation, deleted):
            state.on_client((namespace, name), entry)

    @kopf.on.event("v1", "secrets", registry=reg)
    async def secret_event(
        type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        state = state_of(memo)
        seen(state, SECRET, (_ns(namespace), name), type)
        state.on_secret((_ns(namespace), name))
        if (body.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == MANAGED_BY:
            state.on_child(body, type == "DELETED")

    # Resync as a kopf timer, not a loop of our own: kopf pauses timers together with every
    # other handler while a peer with a higher priority is active, so a standby replica
    # never writes. (Timers need kopf's finalizer on the gateway: routeway.dev/finalizer.)
    @kopf.timer(
        GROUP,
        VERSION,
        ModelGateway.PLURAL,
        id="resync",
        interval=config.resync_interval,
        initial_delay=config.resync_interval,
        registry=reg,
    )
    async def resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        state = state_of(memo)
        if state.relist is not None:
            state.relist.recheck()  # deletions a lone empty re-list could not show
        names = ChildNames.of(name)
        state.applier.forget_where(
            lambda path: (
                f"/namespaces/{_ns(namespace)}/" in path
                and path.rsplit("/", 1)[-1].startswith(names.workload)
            )
        )
        state.mark_gateway((_ns(namespace), name))

    for api_version, plural in CHILD_RESOURCES:

        @kopf.on.event(api_version, plural, labels=MANAGED, id=f"child_{plural}", registry=reg)
        async def child_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
            state = state_of(memo)
            child = CHILD_KINDS.get(str(body.get("kind")))
            if state.relist is not None and child is not None:
                state.relist.seen_child(child[1], type)
            state.on_child(body, type == "DELETED")

    return reg
