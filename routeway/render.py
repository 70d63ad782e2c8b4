"""Render translated IR into the `ProxyConfig` document a proxy serves.

Translation decided *what* is served; rendering only changes units and shape: durations
become seconds, references become ids, defaults are made explicit and everything is sorted,
so that equal inputs give byte-identical documents and the content hash is a stable revision.

The document is built as plain data and validated once as a whole: one pydantic-core call
over 10,000 routes costs a fraction of constructing 40,000 models one by one, and the proxy
gets exactly what `parse_proxy_config` would accept.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from routeway.durations import parse_duration
from routeway.gcpause import gc_paused
from routeway.proxyconfig import SCHEMA_VERSION, MockBehaviour, ProxyConfig
from routeway.resources import ModelBackend, ModelGateway, parse_bytes
from routeway.translate import ClientIR, GatewayIR, NsName, ResolvedTarget, RouteIR, Translation

BACKOFF_MAX_SECONDS = 1.0
# Every key present, as the validated model would dump it, so the hash of this plain document
# equals `ProxyConfig.content_hash()` of the parsed one.
_MOCK_DEFAULTS = MockBehaviour().model_dump(by_alias=True)


def render_backend(backend: ModelBackend) -> dict[str, Any]:
    spec = backend.spec
    t = spec.timeouts
    od = spec.outlier_detection
    ref = spec.api_key_secret_ref
    mock: dict[str, Any] | None = None
    if spec.provider == "mock":
        m = spec.mock
        mock = dict(_MOCK_DEFAULTS)
        if m is not None:
            mock |= {
                "latency": parse_duration(m.latency),
                "timeToFirstToken": parse_duration(m.time_to_first_token),
                "tokensPerSecond": m.tokens_per_second,
                "errorRate": m.error_rate,
                "maxTokens": m.max_tokens,
            }
    return {
        "id": f"{backend.namespace}/{backend.name}",
        "namespace": backend.namespace,
        "name": backend.name,
        "provider": spec.provider,
        "url": spec.url.rstrip("/") if spec.url else None,
        "version": spec.version,
        "credentialRef": f"{backend.namespace}/{ref.name}/{ref.key}" if ref else None,
        "timeouts": {
            "connect": parse_duration(t.connect),
            "firstByte": parse_duration(t.first_byte),
            "idle": parse_duration(t.idle),
            "total": parse_duration(t.total) if t.total else None,
        },
        "maxConcurrency": spec.max_concurrency,
        "queueTimeout": parse_duration(spec.queue_timeout),
        "outlierDetection": {
            "consecutiveFailures": od.consecutive_failures,
            "baseEjection": parse_duration(od.base_ejection_time),
            "maxEjection": parse_duration(od.max_ejection_time),
        },
        "mock": mock,
        "pricing": None
        if spec.pricing is None
        else {
            "inputPerMillion": spec.pricing.input_per_million_tokens,
            "outputPerMillion": spec.pricing.output_per_million_tokens,
            "currency": spec.pricing.currency,
        },
    }


def _target(t: ResolvedTarget) -> dict[str, Any]:
    return {"backend": f"{t.backend.namespace}/{t.backend.name}", "model": t.model, "weight": t.weight}


def render_route(ir: RouteIR) -> dict[str, Any]:
    route = ir.route
    spec = route.spec
    backoff = parse_duration(spec.retries.backoff)
    return {
        "id": f"{route.namespace}/{route.name}",
        "namespace": route.namespace,
        "name": route.name,
        "model": spec.model,
        "generation": route.metadata.generation,
        "targets": [_target(t) for t in ir.targets],
        "fallbacks": [_target(t) for t in ir.fallbacks],
        "retries": {
            "attempts": spec.retries.attempts,
            "retryOn": sorted(set(spec.retries.retry_on)),
            "backoffBase": backoff,
            "backoffMax": max(backoff, BACKOFF_MAX_SECONDS),
        },
        "timeout": parse_duration(spec.timeout) if spec.timeout else None,
        "stickyHeader": spec.stickiness.header.lower() if spec.stickiness else None,
        # set by a rollout adapter (routeway.rollout.serving), not by translation
        "revision": None,
        "pinnedBackends": [],
        "canary": None,
        "limits": None
        if spec.limits is None
        else {
            "requestsPerMinute": spec.limits.requests_per_minute,
            "tokensPerMinute": spec.limits.tokens_per_minute,
            "defaultMaxTokens": spec.limits.default_max_tokens,
        },
        "cache": None
        if spec.cache is None
        else {
            "ttl": parse_duration(spec.cache.ttl),
            "maxBytes": parse_bytes(spec.cache.max_bytes),
            "scope": spec.cache.scope,
        },
    }


def render_client(ir: ClientIR) -> dict[str, Any]:
    client = ir.client
    spec = client.spec
    limits = spec.limits
    return {
        "id": ir.id,
        "keyRef": f"{client.namespace}/{spec.key_secret_ref.name}/{spec.key_secret_ref.key}",
        "models": sorted(set(spec.models)) if spec.models is not None else None,
        "limits": None
        if limits is None
        else {
            "requestsPerMinute": limits.requests_per_minute,
            "tokensPerMinute": limits.tokens_per_minute,
            "tokensPerDay": limits.tokens_per_day,
        },
    }


def render_gateway_limits(gateway: ModelGateway) -> dict[str, Any]:
    """Always present: without Redis the pods' count is what each pod's share of a limit
    follows from (limit / replicas)."""
    limits = gateway.spec.limits
    redis = limits.redis if limits is not None else None
    ref = redis.password_secret_ref if redis is not None else None
    return {
        "redisUrl": redis.url if redis is not None else None,
        "redisPasswordRef": f"{gateway.namespace}/{ref.name}/{ref.key}" if ref is not None else None,
        "onRedisFailure": limits.on_redis_failure if limits is not None else "FailOpen",
        "replicas": max(gateway.spec.replicas, 1),
    }


def render_document(ir: GatewayIR) -> dict[str, Any]:
    """The ProxyConfig as plain JSON-ready data, `revision` set to its content hash."""
    gw = ir.gateway
    backends: dict[str, ModelBackend] = {}
    for route in ir.routes:
        for t in (*route.targets, *route.fallbacks):
            backends[f"{t.backend.namespace}/{t.backend.name}"] = t.backend
    doc: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "revision": "",
        "gateway": {
            "namespace": gw.namespace,
            "name": gw.name,
            "maxBodyBytes": gw.spec.max_request_body_bytes,
            "clientKeyRefs": sorted(ir.client_key_refs),
            "requireClientKey": ir.require_client_key,
            "clients": [render_client(c) for c in sorted(ir.clients, key=lambda c: c.id)],
            "limits": render_gateway_limits(gw),
        },
        "backends": [render_backend(backends[k]) for k in sorted(backends)],
        "routes": [render_route(r) for r in sorted(ir.routes, key=lambda r: r.route.spec.model)],
    }
    doc["revision"] = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return doc


def render(ir: GatewayIR) -> ProxyConfig:
    with gc_paused():
        return ProxyConfig.model_validate(render_document(ir))


def render_all(translation: Translation) -> dict[NsName, ProxyConfig]:
    return {key: render(ir) for key, ir in sorted(translation.gateways.items())}
