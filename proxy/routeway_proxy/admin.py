"""The admin application: /metrics, /healthz, /readyz, /config, /routes, /observations, /usage.

Why a separate app on its own port: probes and scrapes must keep working when the client port
is saturated, and nothing here should be reachable by the clients of the models.

`metrics_registry_factory` (optional) returns the registry to read for /metrics and the
statistics in /routes; with `--workers N` the process helper passes one that builds a
`CollectorRegistry` with a `MultiProcessCollector`, so both describe the whole process group.
Collecting reads files in multiprocess mode, so it runs in the default executor, off the loop;
the request ledger (`ledger.py`) is flushed on the loop first.

`/usage` is the process group's per-client usage in the current UTC minute and day (the
format is in `usage.py`), what the operator reads for `ModelClient.status`.

`/observations` is the process group's rollout observation report (`source_host.SourceHost`,
whose `install` also adds the admin routes a config source asked for).

Health and concurrency in /routes are this worker's view; `ejectedUntil` (from the registry)
is the latest ejection any worker made.

Nothing here authenticates its caller (`--admin-host` and, in a cluster, the chart's
NetworkPolicy decide who reaches the port), so the rule for `/config` (and every document
here) is: nothing a reader could use against an upstream or to pass as a client. Secrets are
shown by reference only (`credentialRef`, `clientKeyRefs`, `keyRef`, `redisPasswordRef`: a
Secret's namespace, name and key name); a URL is shown without userinfo, query or fragment
(validation rejects them, this is the second line); known credential values, values of
secret-looking fields and anything shaped like a client key's digest are replaced by
`<redacted>`. The config holds no header values; should one ever be added it falls under the
secret-looking rule or must be redacted here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from routeway_proxy.headers import REVISION_HEADER
from routeway_proxy.redact import REDACTED
from routeway_proxy.runtime import ProxyRuntime
from routeway_proxy.source_host import SourceHost
from routeway_proxy.stats import ProxyStats, read_stats
from routeway_proxy.table import RouteEntry, RoutingTable, TargetEntry
from routeway_proxy.usage import usage_report

RegistryFactory = Callable[[], CollectorRegistry]

ADMIN_RUNTIME_KEY = web.AppKey("routeway_admin_runtime", ProxyRuntime)


def create_admin_app(
    runtime: ProxyRuntime,
    metrics_registry_factory: RegistryFactory | None = None,
    host: SourceHost | None = None,
) -> web.Application:
    """`host`: the process group's `SourceHost` (default: one for this process alone)."""
    app = web.Application()
    app[ADMIN_RUNTIME_KEY] = runtime
    factory: RegistryFactory = metrics_registry_factory or (lambda: runtime.metrics.registry)
    if host is None:
        host = SourceHost(runtime, runtime.metrics.arms.collect)
    source_host = host

    async def metrics(request: web.Request) -> web.Response:
        runtime.metrics.ledger.flush()  # on the loop thread, before collecting off it
        body = await asyncio.get_running_loop().run_in_executor(None, lambda: generate_latest(factory()))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def routes(request: web.Request) -> web.Response:
        runtime.metrics.ledger.flush()
        stats = await asyncio.get_running_loop().run_in_executor(None, lambda: read_stats(factory()))
        return _json(describe_routes(runtime, stats))

    async def observations(request: web.Request) -> web.Response:
        runtime.metrics.ledger.flush()
        document = await asyncio.get_running_loop().run_in_executor(None, source_host.observations)
        return _json(document)

    async def usage(request: web.Request) -> web.Response:
        runtime.metrics.ledger.flush()
        config = runtime.config
        clients = [c.id for c in config.gateway.clients] if config is not None else []
        document = await asyncio.get_running_loop().run_in_executor(
            None, lambda: usage_report(factory().collect(), clients, time.time())
        )
        return _json(document)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/usage", usage)
    app.router.add_get("/observations", observations)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config", config)
    app.router.add_get("/routes", routes)
    host.install(app)
    return app


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(document), status=status, content_type="application/json", headers=headers
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[ADMIN_RUNTIME_KEY]
    config = runtime.config
    if config is None:
        return _json({"status": "not ready", "reason": "no config applied yet"}, status=503)
    return _json({"status": "ready", "revision": config.revision})


async def config(request: web.Request) -> web.Response:
    """The ProxyConfig being served (redacted); 503 before the first one."""
    runtime = request.app[ADMIN_RUNTIME_KEY]
    headers: dict[str, str] = {}
    rejection = runtime.last_rejection
    if rejection is not None:
        described = public_config(runtime.redact(rejection.describe()))
        headers["x-routeway-last-rejection"] = orjson.dumps(described).decode()
    current = runtime.config
    if current is None:
        errors = list(rejection.errors) if rejection is not None else []
        return _json(
            public_config(
                runtime.redact(
                    {
                        "error": {
                            "message": "No config applied yet.",
                            "type": "server_error",
                            "code": "not_ready",
                            "rejected": errors,
                        }
                    }
                )
            ),
            status=503,
            headers=headers,
        )
    headers[REVISION_HEADER] = current.revision
    return _json(public_config(runtime.redact(current.to_document())), headers=headers)


_URL_FIELDS = frozenset({"url", "redisUrl"})
_KEY_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")
_URL_TAIL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)[?#]\S*")


def public_config(document: Any) -> Any:
    """`document` (already redacted by the runtime) with every URL field cut to scheme, host
    and path, and digests of client keys replaced: see the module's rule."""
    if isinstance(document, dict):
        return {
            k: public_url(v) if k in _URL_FIELDS and isinstance(v, str) else public_config(v)
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [public_config(item) for item in document]
    if isinstance(document, str):
        text = _KEY_DIGEST.sub(REDACTED, document)
        return _URL_TAIL.sub(lambda m: f"{m.group('head')}?{REDACTED}", text)  # a URL in a message
    return document


def public_url(url: str) -> str:
    """`url` without userinfo, query and fragment (each replaced by a marker, so the reader
    sees that something was there); an unparsable one is hidden whole."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else host
        query = REDACTED if parts.query or "?" in url else ""
        fragment = REDACTED if parts.fragment or "#" in url else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
    except ValueError:
        return REDACTED


def describe_routes(runtime: ProxyRuntime, stats: ProxyStats) -> dict[str, Any]:
    """The /routes document: every route's targets, weights, backend state and statistics."""
    table = runtime.table
    rejection = runtime.last_rejection
    document: dict[str, Any] = {
        "ready": table is not None,
        "revision": table.revision if table is not None else None,
        "lastRejection": runtime.redact(rejection.describe()) if rejection is not None else None,
        "problems": runtime.redact(list(runtime.warnings)),
        "routes": [],
        "backends": [],
    }
    if table is None:
        return document
    document["routes"] = [_describe_route(table, model, stats) for model in sorted(table.routes)]
    document["backends"] = _describe_backends(table, stats)
    return document


def _describe_route(table: RoutingTable, model: str, stats: ProxyStats) -> dict[str, Any]:
    route = table.routes[model]
    config = route.config
    unrouted = stats.for_pair(config.id, "")
    canary = route.canary
    return {
        "id": config.id,
        "model": config.model,
        "revision": config.revision,
        **_describe_arm(route, stats),
        "canary": (
            {
                "revision": canary.config.revision,
                "weight": config.canary.weight if config.canary is not None else 0.0,
                "share": route.split.percent if route.split is not None else 0.0,
                **_describe_arm(canary, stats),
            }
            if canary is not None
            else None
        ),
        "inFlight": stats.in_flight.get(config.id, 0.0),
        "answeredWithoutBackend": unrouted.describe() if unrouted.requests else None,
    }


def _describe_arm(arm: RouteEntry, stats: ProxyStats) -> dict[str, Any]:
    """An arm's routing: targets (shares within the arm), fallbacks, retries, timeout."""
    config = arm.config
    total_weight = sum(t.target.weight for t in arm.targets)

    def describe_target(entry: TargetEntry, weighted: bool) -> dict[str, Any]:
        weight = entry.target.weight
        described: dict[str, Any] = {
            "backend": entry.backend.id,
            "model": entry.target.model,
            "weight": weight,
        }
        if weighted:
            described["share"] = weight / total_weight if total_weight else 0.0
        if entry.backend.pinned:
            described["pinned"] = True  # this revision's own spec of the backend
        described["health"] = _describe_backend_state(entry, stats)
        described["stats"] = stats.for_pair(config.id, entry.backend.id).describe()
        return described

    return {
        "targets": [describe_target(t, True) for t in arm.targets],
        "fallbacks": [describe_target(t, False) for t in arm.fallbacks],
        "retries": config.retries.model_dump(mode="json", by_alias=True),
        "timeout": config.timeout,
        "stickyHeader": config.sticky_header,
    }


def _describe_backend_state(entry: TargetEntry, stats: ProxyStats) -> dict[str, Any]:
    backend = entry.backend
    state = backend.health.describe()
    until = stats.ejected_until.get(backend.id, 0.0)
    state["ejectedUntil"] = until if until > time.time() else None
    state["ejected"] = state["ejected"] or state["ejectedUntil"] is not None  # by any worker
    state["inFlight"] = backend.limiter.in_use
    state["maxConcurrency"] = backend.config.max_concurrency
    return state


def _describe_backends(table: RoutingTable, stats: ProxyStats) -> list[dict[str, Any]]:
    described = []
    for backend_id in sorted(table.backends):
        backend = table.backends[backend_id]
        state = backend.health.describe()
        until = stats.ejected_until.get(backend_id, 0.0)
        state["ejectedUntil"] = until if until > time.time() else None
        state["ejected"] = state["ejected"] or state["ejectedUntil"] is not None
        described.append(
            {
                "id": backend_id,
                "provider": backend.config.provider,
                "version": backend.config.version,
                "health": state,
                "inFlight": backend.limiter.in_use,
                "maxConcurrency": backend.config.max_concurrency,
            }
        )
    return described
