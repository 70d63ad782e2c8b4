"""A thin JSON client for the Kubernetes API, on kubernetes_asyncio's authenticated session.

The operator writes many kinds (Deployments, ConfigMaps, RBAC, status of custom resources,
Events); typed model classes would be slow for 10,000-route ConfigMaps and add nothing the
builders do not already guarantee, so requests carry plain dicts by URL path. Credentials come
from in-cluster config or KUBECONFIG, as kubectl does (`create_api`), or from an explicit
server URL (tests, against kmock).

Errors are mapped once, here, into kopf's vocabulary: retryable ones become
`kopf.TemporaryError` (with a delay), the rest `kopf.PermanentError`, so no caller can
swallow an API failure with a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import kopf
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

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

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._client = api_client

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
        except (OSError, TimeoutError) as exc:
            raise ApiError(0, "ConnectionError", str(exc) or type(exc).__name__) from None
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise _status_error(resp.status, str(resp.reason or ""), raw)
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
    return _status_error(int(exc.status or 0), str(exc.reason or ""), body)


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
