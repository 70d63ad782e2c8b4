"""Config from the Kubernetes API: follow a gateway's ConfigMap and Secret, not mounted files.

A mounted ConfigMap reaches a pod in about a minute (kubelet sync period); a watch brings a
change in well under a second, so `routeway proxy --configmap NAME --secret NAME
--namespace NS` watches both objects through the API and yields a `ConfigLoaded` per change,
which the proxy swaps in atomically like a file reload.

The storage format (inline `config.json`, or gzipped shards named by a manifest that the
operator writes last; the Secret's base64 values) is defined once, in the pure core's
`routeway.configstore`: the operator encodes with it, this module decodes with it. A shard set
that changed under the reader fails its checksum and is read again from the manifest.

Robustness: objects are filtered by name on the client side too (some servers ignore field
selectors), every request has a timeout, a watch that ends or fails is re-listed with
backoff, and a config that cannot be decoded is a `ConfigRejected` (the last good one keeps
serving). Credential values never appear in messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from routeway.configstore import TornConfig, decode_config, decode_credentials, shards_to_read
from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.proxyconfig import parse_proxy_config

log = logging.getLogger("routeway.proxy.kube")

WATCH_TIMEOUT = 240  # seconds a server-side watch lasts before a fresh list
REQUEST_TIMEOUT = 15.0
TORN_READ_RETRIES = 5


def credentials_of(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """A credentials Secret as credentialRef → value; invalid entries are skipped with a
    warning naming the key (never the value)."""
    credentials, skipped = decode_credentials((secret or {}).get("data"))
    for key in skipped:
        log.warning("credential %s is not a valid entry; skipped", key)
    return credentials


# --- the source -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeConfigSource:
    """Follow ConfigMap `configmap` (+ shards) and Secret `secret` in `namespace`.

    Picklable (names only): each worker process opens its own API session. `server` points at
    an explicit API URL (tests); otherwise in-cluster config, then KUBECONFIG.
    """

    namespace: str
    configmap: str
    secret: str | None = None
    server: str | None = None
    watch_timeout: int = WATCH_TIMEOUT

    def describe(self) -> str:
        return f"configmap {self.namespace}/{self.configmap}"

    async def _client(self) -> k8s_client.ApiClient:
        configuration = k8s_client.Configuration()
        if self.server is not None:
            configuration.host = self.server.rstrip("/")
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                await k8s_config.load_kube_config(client_configuration=configuration)
        return k8s_client.ApiClient(configuration)

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        api = await self._client()
        queue: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        kinds = ["configmaps"] + (["secrets"] if self.secret else [])
        tasks = [asyncio.create_task(self._follow(api, kind, queue)) for kind in kinds]
        latest: dict[str, dict[str, Any] | None] = {}
        last_versions: tuple[str | None, ...] | None = None
        try:
            while True:
                kind, obj = await queue.get()
                latest[kind] = obj
                if any(k not in latest for k in kinds):
                    continue  # the first update carries both config and credentials
                versions = tuple((latest[k] or {}).get("metadata", {}).get("resourceVersion") for k in kinds)
                if versions == last_versions and all(latest[k] is not None for k in kinds):
                    continue
                last_versions = versions
                yield await self._load(api, latest["configmaps"], latest.get("secrets"))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api.close()

    async def _load(
        self, api: k8s_client.ApiClient, configmap: dict[str, Any] | None, secret: dict[str, Any] | None
    ) -> ConfigUpdate:
        source = self.describe()
        for _ in range(TORN_READ_RETRIES):
            if configmap is None:
                return ConfigRejected(source, (f"{source} not found",))
            data = configmap.get("data") or {}
            try:
                shards = {n: await self._get_binary(api, n) for n in shards_to_read(data)}
                config = parse_proxy_config(decode_config(data, shards))
            except TornConfig:
                configmap = await self._get(api, "configmaps", self.configmap)
                continue
            except ValidationError as exc:
                errors = tuple(f"{source}: {e['loc']}: {e['msg']}" for e in exc.errors(include_url=False))
                return ConfigRejected(source, errors[:20])
            except (ValueError, OSError, EOFError) as exc:
                return ConfigRejected(source, (f"{source}: {exc}",))
            if self.secret and secret is None:
                log.warning(
                    "secret %s/%s not found: serving without credentials", self.namespace, self.secret
                )
            return ConfigLoaded(config, credentials_of(secret), source)
        return ConfigRejected(source, (f"{source}: shards kept changing while being read",))

    async def _get_binary(self, api: k8s_client.ApiClient, name: str) -> Mapping[str, str] | None:
        """A shard ConfigMap's binaryData (None: not found)."""
        shard = await self._get(api, "configmaps", name)
        return (shard or {}).get("binaryData")

    def _path(self, plural: str, name: str | None = None) -> str:
        path = f"/api/v1/namespaces/{self.namespace}/{plural}"
        return f"{path}/{name}" if name else path

    async def _get(self, api: k8s_client.ApiClient, plural: str, name: str) -> dict[str, Any] | None:
        try:
            resp = await api.call_api(
                self._path(plural, name),
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise ApiException(status=resp.status, reason=str(resp.reason))
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def _follow(
        self, api: k8s_client.ApiClient, plural: str, queue: asyncio.Queue[tuple[str, dict[str, Any] | None]]
    ) -> None:
        """List then watch one named object for ever; re-list after every watch end or error."""
        name = self.configmap if plural == "configmaps" else self.secret
        assert name is not None
        selector = f"metadata.name={name}"
        backoff = 0.5
        while True:
            try:
                resp = await api.call_api(
                    self._path(plural),
                    "GET",
                    query_params=[("fieldSelector", selector)],
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                if resp.status != 200:
                    raise ApiException(status=resp.status, reason=str(resp.reason))
                listing = json.loads(raw)
                items = [i for i in listing.get("items") or [] if i.get("metadata", {}).get("name") == name]
                await queue.put((plural, items[0] if items else None))
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                await self._watch(api, plural, name, selector, version, queue)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except (ApiException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning(
                    "watching %s %s/%s failed (%s); retrying in %.1fs",
                    plural,
                    self.namespace,
                    name,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _watch(
        self,
        api: k8s_client.ApiClient,
        plural: str,
        name: str,
        selector: str,
        version: str,
        queue: asyncio.Queue[tuple[str, dict[str, Any] | None]],
    ) -> None:
        params = [("watch", "true"), ("fieldSelector", selector), ("timeoutSeconds", str(self.watch_timeout))]
        if version:
            params.append(("resourceVersion", version))
        resp = await api.call_api(
            self._path(plural),
            "GET",
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                sock_connect=REQUEST_TIMEOUT, sock_read=self.watch_timeout + 30
            ),
        )
        try:
            if resp.status != 200:
                raise ApiException(status=resp.status, reason=str(resp.reason))
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    return  # e.g. 410 Gone: list again
                if obj.get("metadata", {}).get("name") != name:
                    continue
                await queue.put((plural, None if event.get("type") == "DELETED" else obj))
        finally:
            resp.release()
