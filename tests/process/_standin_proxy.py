"""Test-only stand-in for routeway.proxy.runtime / routeway.proxy.app (helper-1's modules).

Used only while those modules do not exist yet, so the process tests can run the real
commands; it implements just the agreed interface and the behaviour the tests observe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from routeway.proxyconfig import ProxyConfig

REQUESTS = Counter("routeway_requests", "requests", ["route", "backend", "code"])


class ProxyRuntime:
    def __init__(self) -> None:
        self._config: ProxyConfig | None = None
        self._credentials: Mapping[str, str] = {}
        self.errors: list[str] = []

    def apply(self, config: ProxyConfig, credentials: Mapping[str, str]) -> None:
        self._config, self._credentials, self.errors = config, dict(credentials), []

    def reject(self, source: str, errors: Sequence[str]) -> None:
        self.errors = list(errors)

    @property
    def ready(self) -> bool:
        return self._config is not None

    @property
    def config(self) -> ProxyConfig | None:
        return self._config


RUNTIME = web.AppKey("runtime", ProxyRuntime)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_proxy_app(runtime: ProxyRuntime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime

    async def session_ctx(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", _chat)
    return app


async def _chat(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    config = runtime.config
    if config is None:
        return web.json_response({"error": {"message": "no config"}}, status=503)
    body = orjson.loads(await request.read())
    route = next((r for r in config.routes if r.model == body.get("model")), None)
    if route is None:
        return web.json_response({"error": {"message": "unknown model"}}, status=404)
    target = next(t for t in route.targets if t.weight > 0)
    backend = next(b for b in config.backends if b.id == target.backend)
    headers = {"content-type": "application/json"}
    if backend.credential_ref:
        headers["authorization"] = f"Bearer {runtime._credentials.get(backend.credential_ref, '')}"
    body["model"] = target.model
    async with request.app[SESSION].post(
        f"{backend.url}/chat/completions", data=orjson.dumps(body), headers=headers
    ) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.headers.update(
            {
                "content-type": upstream.headers.get("content-type", "application/json"),
                "x-routeway-route": route.id,
                "x-routeway-backend": backend.id,
                "x-routeway-revision": config.revision,
            }
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    REQUESTS.labels(route.id, backend.id, str(upstream.status)).inc()
    return response


def create_admin_app(
    runtime: ProxyRuntime, metrics_registry_factory: Callable[[], CollectorRegistry] | None = None
) -> web.Application:
    app = web.Application()

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": runtime.ready}, status=200 if runtime.ready else 503)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def routes(request: web.Request) -> web.Response:
        config = runtime.config
        return web.json_response(
            {
                "revision": config.revision if config else None,
                "routes": [r.id for r in config.routes] if config else [],
                "errors": runtime.errors,
            }
        )

    async def metrics(request: web.Request) -> web.Response:
        registry = metrics_registry_factory() if metrics_registry_factory else REGISTRY
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/routes", routes)
    app.router.add_get("/metrics", metrics)
    return app
