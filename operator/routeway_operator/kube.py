"""A thin JSON client for the Kubernetes API, on kubernetes_asyncio's authenticated session.

The operator writes many kinds (Deployments, ConfigMaps, RBAC, status of custom resources,
Events); typed model classes would be slow for 10,000-route ConfigMaps and add nothing the
builders do not already guarantee, so requests carry plain dicts by URL path. Credentials come
from in-cluster config or KUBECONFIG, as kubectl does (`create_api`), or from an explicit
server URL (tests, against kmock).

Transient failures (throttling, 5xx, a refused or reset connection) are retried here, a few
times within a second or two, as kopf retries its own requests: kopf's retries cover only
what kopf sends (lists, watches, its finalizer), not this client. Every request here is safe
to repeat: creates carry a fixed name (a repeat meets 409, which create-or-patch handles),
patches are merge patches, deletes of a gone object are not errors. A request that timed out
is not repeated (it may take as long again); the reconcile as a whole is retried instead.

Errors are mapped once, here, into kopf's vocabulary: retryable ones become
`kopf.TemporaryError` (with a delay), the rest `kopf.PermanentError`, so no caller can
swallow an API failure with a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("routeway.operator.kube")

RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})
"""Statuses repeated at once (0: no answer, the connection failed); 409 is not among them:
what a conflict means is the caller's to decide (create-or-patch re-reads)."""
RETRY_BACKOFFS = (0.2, 0.5, 1.0)  # seconds before the 2nd, 3rd and 4th attempt (±25%)
MAX_RETRY_AFTER = 10.0  # a server's Retry-After is honoured up to this; longer: the reconcile backs off
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0
TIMEOUT_REASON = "Timeout"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT and self.reason != TIMEOUT_REASON

    def to_kopf(self, what: str) -> kopf.TemporaryError | kopf.PermanentError:
        """Retry what may pass (throttling, conflicts, server trouble); report the rest."""
        text = f"{what}: {self}"
        if self.status in RETRYABLE or self.status == 0:
            return kopf.TemporaryError(text, delay=5 if self.status == 429 else 2)
        return kopf.PermanentError(text)


def path_for(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    return base


class KubeApi:
    """GET/POST/PATCH/DELETE of JSON documents by path; 404 on GET/DELETE is not an error."""

    def __init__(
        self, api_client: k8s_client.ApiClient, *, backoffs: Sequence[float] = RETRY_BACKOFFS
    ) -> None:
        self._client = api_client
        self._backoffs = tuple(backoffs)

    @classmethod
    async def connect(cls, server: str | None = None, *, config_file: str | None = None) -> KubeApi:
        """An explicit server URL (tests), an explicit kubeconfig file, else in-cluster config,
        else KUBECONFIG (like kubectl)."""
        configuration = k8s_client.Configuration()
        if server is not None:
            configuration.host = server.rstrip("/")
        elif config_file is not None:
            await k8s_config.load_kube_config(config_file=config_file, client_configuration=configuration)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                await k8s_config.load_kube_config(client_configuration=configuration)
        return cls(k8s_client.ApiClient(configuration))

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request, repeated after a short backoff while it fails transiently."""
        for backoff in self._backoffs:
            try:
                return await self._call_once(
                    method, path, body=body, params=params, content_type=content_type
                )
            except ApiError as exc:
                if not exc.transient:
                    raise
                delay = backoff * random.uniform(0.75, 1.25)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER))
                log.info(
                    "%s %s failed (%s %s); repeating in %.1fs", method, path, exc.status, exc.reason, delay
                )
                await asyncio.sleep(delay)
        return await self._call_once(method, path, body=body, params=params, content_type=content_type)

    async def _call_once(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: Mapping[str, str] | None,
        content_type: str,
    ) -> Any:
        try:
            resp = await self._client.call_api(
                path,
                method,
                query_params=list((params or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            raise _api_error(exc) from None
        except TimeoutError as exc:
            raise ApiError(0, TIMEOUT_REASON, str(exc) or "no answer in time") from None
        except (OSError, aiohttp.ClientError) as exc:  # refused, reset, disconnected
            raise ApiError(0, "ConnectionError", str(exc) or type(exc).__name__) from None
        try:
            raw = await resp.read()
        except TimeoutError as exc:
            raise ApiError(0, TIMEOUT_REASON, str(exc) or "no answer in time") from None
        except (OSError, aiohttp.ClientError) as exc:  # the body broke off
            raise ApiError(0, "ConnectionError", str(exc) or type(exc).__name__) from None
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            error = _status_error(resp.status, str(resp.reason or ""), raw)
            error.retry_after = _retry_after(resp.headers.get("Retry-After"))
            raise error
        return json.loads(raw) if raw else None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call("GET", path, params=params)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", path, body=dict(body))
        return result

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("PATCH", path, body=dict(body), content_type=MERGE_PATCH)
        return result

    async def delete(self, path: str) -> bool:
        try:
            await self._call("DELETE", path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _api_error(exc: ApiException) -> ApiError:
    body: Any = exc.body
    error = _status_error(int(exc.status or 0), str(exc.reason or ""), body)
    headers: Mapping[str, str] = exc.headers or {}
    error.retry_after = _retry_after(headers.get("Retry-After"))
    return error


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the API server sends whole seconds)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _status_error(status: int, reason: str, body: Any) -> ApiError:
    """An ApiError from a Kubernetes `Status` body (reason and message), or the raw text."""
    message = ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
            reason = str(doc.get("reason") or reason)
            message = str(doc.get("message") or "")
        except (ValueError, AttributeError):
            message = body[:200]
    return ApiError(status, reason, message[:500])
