"""The routing table: everything a request needs, built once per applied config.

Why immutable and built once: the hot path does a dict lookup by public model name and reads
prepared objects (endpoint URLs, credentials as ready `Authorization` values, bound metric
children, response headers); nothing is parsed or decided per request. A new config builds a
new table that replaces the old one in one assignment, so a request keeps the table it started
with to its end.

What carries over between tables: a backend's passive-health state, keyed by backend id, as
long as that backend's config is unchanged — a reload must not reset an ejection; and its
concurrency limiter for as long as the id exists, resized when `maxConcurrency` changed — a
reload must never let a full backend take twice its limit (requests of the old table still
hold their slots).

The balancer state (smooth round-robin scores) belongs to a route's table entry and starts
over with each config; that costs at most one round of exactness.

Rollouts: a route with a `canary` gets a second `RouteEntry` beside its own (the stable
arm), with the canary revision's targets, fallbacks, retries, timeout and balancer; the
request path picks one (`pipeline.choose.choose_arm`) and then runs exactly as for any route.
A backend spec pinned by an arm (`pinnedBackends`) that differs from the config's backend of
that id is an entry of its own (its own provider, health and limiter, its state carried over
by spec); a pinned spec equal to the config's shares the config's entry.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from yarl import URL

from routeway.proxyconfig import BackendConfig, ProxyConfig, RouteConfig, Target
from routeway.rollout.weights import canary_share
from routeway_proxy.arm_metrics import ArmRecorder
from routeway_proxy.balancer import WeightedRoundRobin
from routeway_proxy.clients import Callers, build_callers
from routeway_proxy.headers import ARM_HEADER, BACKEND_HEADER, REVISION_HEADER, ROUTE_HEADER
from routeway_proxy.health import ConcurrencyLimiter, OutlierDetector
from routeway_proxy.metrics import PairMetrics, PlainValue, ProxyMetrics
from routeway_proxy.pipeline.authenticate import Caller
from routeway_proxy.pipeline.choose import ArmSplit
from routeway_proxy.providers import Provider
from routeway_proxy.providers.mock import MockProvider
from routeway_proxy.providers.openai import OpenAIProvider

log = logging.getLogger("routeway.proxy")


@dataclass(frozen=True, slots=True)
class BackendState:
    """Per-backend state that outlives a table while the backend's config is unchanged."""

    config: BackendConfig
    health: OutlierDetector
    limiter: ConcurrencyLimiter


@dataclass(frozen=True, slots=True)
class BackendEntry:
    id: str
    config: BackendConfig
    health: OutlierDetector
    limiter: ConcurrencyLimiter
    provider: Provider
    authorization: str | None
    pinned: bool = False  # a spec pinned by a route revision, not the config's for this id


@dataclass(frozen=True, slots=True)
class TargetEntry:
    target: Target
    backend: BackendEntry
    metrics: PairMetrics
    headers: Mapping[str, str]  # the three x-routeway-* response headers
    header_items: tuple[tuple[str, str], ...]  # the same, as pairs for building a response


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route, or one arm of a route in a rollout (both arms share the route's id)."""

    config: RouteConfig  # a canary arm's: the route's, with the canary revision's routing fields
    targets: tuple[TargetEntry, ...]
    fallbacks: tuple[TargetEntry, ...]
    balancer: WeightedRoundRobin
    has_weighted_targets: bool  # some target has weight > 0
    target_keys: tuple[str, ...]  # backend ids, hashed for stickiness
    retry_on: frozenset[str]
    headers: Mapping[str, str]  # route and revision headers, before a backend is chosen
    metrics: PairMetrics  # (route, "") for answers given before a backend was chosen
    in_flight: PlainValue  # value of this route's in-flight gauge child (mmap-backed in multiprocess mode)
    sticky_header: str | None  # config.sticky_header and config.timeout, one attribute read away:
    timeout: float | None  # the request path reads them on every request
    only_target: TargetEntry | None  # the one target with a weight > 0, if there is exactly one
    # rollouts: the arm's name ("stable"/"canary", None for a route without a canary), the
    # recorder of its revision's attempts (None without a revision), and on the stable arm of
    # a route in a rollout the canary arm and the split between them
    arm: str | None = None
    observer: ArmRecorder | None = None
    canary: RouteEntry | None = None
    split: ArmSplit | None = None

    @property
    def id(self) -> str:
        return self.config.id


@dataclass(frozen=True, slots=True)
class RoutingTable:
    config: ProxyConfig
    routes: Mapping[str, RouteEntry]  # by public model name
    backends: Mapping[str, BackendEntry]
    # requireClientKey, clientKeyRefs or clients: a request needs a key of `callers` (none: all 401)
    auth_required: bool
    gateway_caller: Caller  # gateway keys' identity, and everyone's on an open gateway
    callers: Callers  # by key digest (routeway_proxy.clients)
    models_body: bytes  # GET /v1/models, prebuilt (every model)
    unrouted: PairMetrics  # ("", "") for answers given before routing
    max_body_bytes: int  # config.gateway.max_body_bytes, read on every request

    @property
    def revision(self) -> str:
        return self.config.revision


def make_provider(config: BackendConfig) -> Provider:
    if config.provider == "mock":
        return MockProvider(config.mock)
    if not config.url:
        raise ValueError(f"backend {config.id} has provider {config.provider} but no url")
    return OpenAIProvider(config.url, config.timeouts.connect)


def read_url_basic_auth(url: str) -> str | None:
    """`Authorization: Basic` for credentials written into a backend URL (user:pass@host).

    The provider strips them from the URL it sends to (aiohttp refuses both a URL with userinfo
    and an Authorization header), so a backend credential, when set, wins.
    """
    parsed = URL(url)
    if parsed.user is None:
        return None
    token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode()
    return f"Basic {token}"


def build_routing_table(
    config: ProxyConfig,
    credentials: Mapping[str, str],
    previous: Mapping[str, BackendState],
    metrics: ProxyMetrics,
    clock: Callable[[], float],
) -> tuple[RoutingTable, dict[str, BackendState]]:
    """The table for `config`, reusing `previous` state of unchanged backends; and the new state."""
    states: dict[str, BackendState] = {}
    backends: dict[str, BackendEntry] = {}
    for backend in config.backends:
        backends[backend.id] = make_backend_entry(backend, backend.id, credentials, previous, states, clock)

    pinned_entries: dict[str, BackendEntry] = {}  # by state key (id and spec digest)

    def resolve(pins: tuple[BackendConfig, ...]) -> dict[str, BackendEntry]:
        """An arm's pinned backends that differ from the config's, by id (looked up first)."""
        resolved: dict[str, BackendEntry] = {}
        for spec in pins:
            shared = backends.get(spec.id)
            if shared is not None and shared.config == spec:
                continue
            key = pinned_state_key(spec)
            entry = pinned_entries.get(key)
            if entry is None:
                entry = pinned_entries[key] = make_backend_entry(
                    spec, key, credentials, previous, states, clock, pinned=True
                )
            resolved[spec.id] = entry
        return resolved

    revision = config.revision
    routes: dict[str, RouteEntry] = {}
    for route in config.routes:
        if route.model in routes:
            log.warning(
                "route %s: model %r is already served by route %s; ignored",
                route.id,
                route.model,
                routes[route.model].id,
            )
            continue
        unrouted_pair = metrics.bind_pair(route.id, "")
        in_flight = metrics.values.adopt(metrics.in_flight.labels(route.id), "_value")
        canary = route.canary
        if canary is None:
            routes[route.model] = build_arm(
                route,
                None,
                backends,
                resolve(route.pinned_backends),
                revision,
                metrics,
                unrouted_pair,
                in_flight,
            )
            continue
        canary_config = route.model_copy(
            update={
                "targets": canary.targets,
                "fallbacks": canary.fallbacks,
                "retries": canary.retries,
                "timeout": canary.timeout,
                "sticky_header": canary.sticky_header,
                "revision": canary.revision,
                "pinned_backends": canary.pinned_backends,
                "canary": None,
            }
        )
        canary_arm = build_arm(
            canary_config,
            "canary",
            backends,
            resolve(canary.pinned_backends),
            revision,
            metrics,
            unrouted_pair,
            in_flight,
        )
        percent = canary_share(canary.weight, [t.target for t in canary_arm.targets])
        split = ArmSplit(percent, canary.revision, route.sticky_header or canary.sticky_header)
        routes[route.model] = build_arm(
            route,
            "stable",
            backends,
            resolve(route.pinned_backends),
            revision,
            metrics,
            unrouted_pair,
            in_flight,
            canary_arm,
            split,
        )

    gateway = config.gateway
    models_body = render_models_list(sorted(routes))
    gateway_caller, callers = build_callers(
        config, credentials, tuple(routes), models_body, metrics.usage, render_models_list
    )
    table = RoutingTable(
        config=config,
        routes=routes,
        backends=backends,
        auth_required=gateway.require_client_key or bool(gateway.client_key_refs) or bool(gateway.clients),
        gateway_caller=gateway_caller,
        callers=callers,
        models_body=models_body,
        unrouted=metrics.bind_pair("", ""),
        max_body_bytes=config.gateway.max_body_bytes,
    )
    return table, states


def make_backend_entry(
    backend: BackendConfig,
    state_key: str,
    credentials: Mapping[str, str],
    previous: Mapping[str, BackendState],
    states: dict[str, BackendState],
    clock: Callable[[], float],
    *,
    pinned: bool = False,
) -> BackendEntry:
    """The entry of `backend`, its state carried over from `previous[state_key]` when the
    spec is unchanged (and recorded in `states`)."""
    old = previous.get(state_key)
    if old is not None and old.config == backend:
        state = old
    else:
        if old is not None:  # changed: new limits, but the slots held under the old ones count
            limiter = old.limiter
            limiter.resize(backend.max_concurrency)
        else:
            limiter = ConcurrencyLimiter(backend.max_concurrency)
        state = BackendState(backend, OutlierDetector(backend.outlier_detection, clock), limiter)
    states[state_key] = state
    authorization = None
    if backend.credential_ref:
        value = credentials.get(backend.credential_ref)
        if value:
            authorization = f"Bearer {value}"
        else:
            log.warning(
                "backend %s: credential %s is not available; sending without one",
                backend.id,
                backend.credential_ref,
            )
    if authorization is None and backend.url:
        authorization = read_url_basic_auth(backend.url)
    return BackendEntry(
        backend.id, backend, state.health, state.limiter, make_provider(backend), authorization, pinned
    )


def pinned_state_key(spec: BackendConfig) -> str:
    """Where a pinned spec's state is kept: its id and a digest of the spec, so two specs of
    one id never share health or a limiter, and the same spec keeps them across configs."""
    digest = hashlib.blake2b(
        orjson.dumps(spec.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS), digest_size=8
    )
    return f"{spec.id}#{digest.hexdigest()}"


def build_arm(
    route: RouteConfig,
    arm: str | None,
    backends: Mapping[str, BackendEntry],
    pinned: Mapping[str, BackendEntry],
    config_revision: str,
    metrics: ProxyMetrics,
    unrouted: PairMetrics,
    in_flight: PlainValue,
    canary: RouteEntry | None = None,
    split: ArmSplit | None = None,
) -> RouteEntry:
    """The entry of a route (`arm` None) or of one arm of a route in a rollout."""
    route_headers = {ROUTE_HEADER: route.id, REVISION_HEADER: config_revision}
    if arm is not None:
        route_headers[ARM_HEADER] = arm

    def bind(targets: tuple[Target, ...]) -> tuple[TargetEntry, ...]:
        entries = []
        for target in targets:
            backend_entry = pinned.get(target.backend) or backends.get(target.backend)
            if backend_entry is None:
                log.warning(
                    "route %s: backend %s is not in the config; target ignored", route.id, target.backend
                )
                continue
            headers = {**route_headers, BACKEND_HEADER: backend_entry.id}
            entries.append(
                TargetEntry(
                    target,
                    backend_entry,
                    metrics.bind_pair(route.id, backend_entry.id, backend_entry.config.pricing),
                    headers,
                    tuple(headers.items()),
                )
            )
        return tuple(entries)

    targets = bind(route.targets)
    weighted = [t for t in targets if t.target.weight > 0]
    observer = None
    if route.revision:
        observer = ArmRecorder(metrics.arms, metrics.values, route.id, route.revision, arm or "stable")
    return RouteEntry(
        config=route,
        targets=targets,
        fallbacks=bind(route.fallbacks),
        balancer=WeightedRoundRobin([t.target.weight for t in targets]),
        has_weighted_targets=bool(weighted),
        target_keys=tuple(t.backend.id for t in targets),
        retry_on=frozenset(route.retries.retry_on),
        headers=route_headers,
        metrics=unrouted,
        in_flight=in_flight,
        sticky_header=route.sticky_header,
        timeout=route.timeout,
        only_target=weighted[0] if len(weighted) == 1 else None,
        arm=arm,
        observer=observer,
        canary=canary,
        split=split,
    )


def render_model(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "routeway"}


def render_models_list(models: list[str]) -> bytes:
    return orjson.dumps({"object": "list", "data": [render_model(m) for m in models]})
