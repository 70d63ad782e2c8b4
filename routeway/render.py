"""Render translated IR into the `ProxyConfig` document a proxy serves.

Translation decided *what* is served; rendering only changes units and shape: durations
become seconds, references become ids, defaults are made explicit and everything is sorted,
so that equal inputs give byte-identical documents and the content hash is a stable revision.
"""

from __future__ import annotations

from routeway.durations import parse_duration
from routeway.proxyconfig import (
    BackendConfig,
    GatewayConfig,
    MockBehaviour,
    OutlierDetection,
    ProxyConfig,
    Retries,
    RouteConfig,
    Target,
    Timeouts,
)
from routeway.resources import ModelBackend
from routeway.translate import GatewayIR, NsName, ResolvedTarget, RouteIR, Translation

BACKOFF_MAX_SECONDS = 1.0


def render_backend(backend: ModelBackend) -> BackendConfig:
    spec = backend.spec
    t = spec.timeouts
    od = spec.outlier_detection
    ref = spec.api_key_secret_ref
    mock = None
    if spec.provider == "mock":
        m = spec.mock
        mock = (
            MockBehaviour()
            if m is None
            else MockBehaviour(
                latency=parse_duration(m.latency),
                time_to_first_token=parse_duration(m.time_to_first_token),
                tokens_per_second=m.tokens_per_second,
                error_rate=m.error_rate,
                max_tokens=m.max_tokens,
            )
        )
    return BackendConfig(
        id=f"{backend.namespace}/{backend.name}",
        namespace=backend.namespace,
        name=backend.name,
        provider=spec.provider,
        url=spec.url.rstrip("/") if spec.url else None,
        version=spec.version,
        credential_ref=f"{backend.namespace}/{ref.name}/{ref.key}" if ref else None,
        timeouts=Timeouts(
            connect=parse_duration(t.connect),
            first_byte=parse_duration(t.first_byte),
            idle=parse_duration(t.idle),
            total=parse_duration(t.total) if t.total else None,
        ),
        max_concurrency=spec.max_concurrency,
        queue_timeout=parse_duration(spec.queue_timeout),
        outlier_detection=OutlierDetection(
            consecutive_failures=od.consecutive_failures,
            base_ejection=parse_duration(od.base_ejection_time),
            max_ejection=parse_duration(od.max_ejection_time),
        ),
        mock=mock,
    )


def _target(t: ResolvedTarget) -> Target:
    return Target(backend=f"{t.backend.namespace}/{t.backend.name}", model=t.model, weight=t.weight)


def render_route(ir: RouteIR) -> RouteConfig:
    route = ir.route
    spec = route.spec
    backoff = parse_duration(spec.retries.backoff)
    return RouteConfig(
        id=f"{route.namespace}/{route.name}",
        namespace=route.namespace,
        name=route.name,
        model=spec.model,
        generation=route.metadata.generation,
        targets=tuple(_target(t) for t in ir.targets),
        fallbacks=tuple(_target(t) for t in ir.fallbacks),
        retries=Retries(
            attempts=spec.retries.attempts,
            retry_on=tuple(sorted(set(spec.retries.retry_on))),
            backoff_base=backoff,
            backoff_max=max(backoff, BACKOFF_MAX_SECONDS),
        ),
        timeout=parse_duration(spec.timeout) if spec.timeout else None,
        sticky_header=spec.stickiness.header.lower() if spec.stickiness else None,
    )


def render(ir: GatewayIR) -> ProxyConfig:
    gw = ir.gateway
    backends: dict[str, ModelBackend] = {}
    for route in ir.routes:
        for t in (*route.targets, *route.fallbacks):
            backends[f"{t.backend.namespace}/{t.backend.name}"] = t.backend
    config = ProxyConfig(
        gateway=GatewayConfig(
            namespace=gw.namespace,
            name=gw.name,
            max_body_bytes=gw.spec.max_request_body_bytes,
            client_key_refs=tuple(sorted(ir.client_key_refs)),
            require_client_key=ir.require_client_key,
        ),
        backends=tuple(render_backend(backends[k]) for k in sorted(backends)),
        routes=tuple(render_route(r) for r in sorted(ir.routes, key=lambda r: r.route.spec.model)),
    )
    return config.with_revision()


def render_all(translation: Translation) -> dict[NsName, ProxyConfig]:
    return {key: render(ir) for key, ir in sorted(translation.gateways.items())}
