"""The routing table: everything a request needs, built once per applied config.

Why immutable and built once: the hot path does a dict lookup by public model name and reads
prepared objects (endpoint URLs, credentials as ready `Authorization` values, bound metric
children, response headers); nothing is parsed or decided per request. A new config builds a
new table that replaces the old one in one assignment, so a request keeps the table it started
with to its end.

What carries over between tables: a backend's passive-health state and its concurrency
limiter, keyed by backend id, as long as that backend's config is unchanged — a reload must
not reset an ejection or let a full backend take twice its limit.

The balancer state (smooth round-robin scores) belongs to a route's table entry and starts
over with each config; that costs at most one round of exactness.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from yarl import URL

from routeway.proxyconfig import BackendConfig, ProxyConfig, RouteConfig, Target
from routeway_proxy.balancer import WeightedRoundRobin
from routeway_proxy.headers import BACKEND_HEADER, REVISION_HEADER, ROUTE_HEADER
from routeway_proxy.health import ConcurrencyLimiter, OutlierDetector
from routeway_proxy.metrics import PairMetrics, PlainValue, ProxyMetrics
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


@dataclass(frozen=True, slots=True)
class TargetEntry:
    target: Target
    backend: BackendEntry
    metrics: PairMetrics
    headers: Mapping[str, str]  # the three x-routeway-* response headers
    header_items: tuple[tuple[str, str], ...]  # the same, as pairs for building a response


@dataclass(frozen=True, slots=True)
class RouteEntry:
    config: RouteConfig
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

    @property
    def id(self) -> str:
        return self.config.id


@dataclass(frozen=True, slots=True)
class RoutingTable:
    config: ProxyConfig
    routes: Mapping[str, RouteEntry]  # by public model name
    backends: Mapping[str, BackendEntry]
    auth_required: (
        bool  # requireClientKey or clientKeyRefs: a request needs one of `client_keys` (none: all 401)
    )
    client_keys: tuple[bytes, ...]
    models_body: bytes  # GET /v1/models, prebuilt
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
        old = previous.get(backend.id)
        if old is not None and old.config == backend:
            state = old
        else:
            state = BackendState(
                backend,
                OutlierDetector(backend.outlier_detection, clock),
                ConcurrencyLimiter(backend.max_concurrency),
            )
        states[backend.id] = state
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
        backends[backend.id] = BackendEntry(
            backend.id, backend, state.health, state.limiter, make_provider(backend), authorization
        )

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
        route_headers = {ROUTE_HEADER: route.id, REVISION_HEADER: revision}

        def bind(
            targets: tuple[Target, ...],
            route: RouteConfig = route,
            route_headers: dict[str, str] = route_headers,
        ) -> tuple[TargetEntry, ...]:
            entries = []
            for target in targets:
                backend_entry = backends.get(target.backend)
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
                        metrics.bind_pair(route.id, backend_entry.id),
                        headers,
                        tuple(headers.items()),
                    )
                )
            return tuple(entries)

        targets = bind(route.targets)
        weighted = [t for t in targets if t.target.weight > 0]
        routes[route.model] = RouteEntry(
            config=route,
            targets=targets,
            fallbacks=bind(route.fallbacks),
            balancer=WeightedRoundRobin([t.target.weight for t in targets]),
            has_weighted_targets=any(t.target.weight > 0 for t in targets),
            target_keys=tuple(t.backend.id for t in targets),
            retry_on=frozenset(route.retries.retry_on),
            headers=route_headers,
            metrics=metrics.bind_pair(route.id, ""),
            in_flight=metrics.values.adopt(metrics.in_flight.labels(route.id), "_value"),
            sticky_header=route.sticky_header,
            timeout=route.timeout,
            only_target=weighted[0] if len(weighted) == 1 else None,
        )

    client_keys = []
    for ref in config.gateway.client_key_refs:
        value = credentials.get(ref)
        if value:
            client_keys.append(value.encode())
        else:
            log.warning("gateway client key %s is not available; it will not authenticate anyone", ref)
    table = RoutingTable(
        config=config,
        routes=routes,
        backends=backends,
        auth_required=config.gateway.require_client_key or bool(config.gateway.client_key_refs),
        client_keys=tuple(client_keys),
        models_body=render_models_list(sorted(routes)),
        unrouted=metrics.bind_pair("", ""),
        max_body_bytes=config.gateway.max_body_bytes,
    )
    return table, states


def render_model(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "routeway"}


def render_models_list(models: list[str]) -> bytes:
    return orjson.dumps({"object": "list", "data": [render_model(m) for m in models]})
