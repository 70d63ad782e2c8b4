"""Config from the Kubernetes API: follow a gateway's ConfigMap and Secret, not mounted files.

A mounted ConfigMap reaches a pod in about a minute (kubelet sync period); a watch brings a
change in well under a second, so `routeway proxy --configmap NAME --secret NAME
--namespace NS` watches both objects through the API and yields a `ConfigLoaded` per change,
which the proxy swaps in atomically like a file reload.

Storage format (written by the operator, read here; both sides import this module so the
format has one definition):

- Small configs: the ConfigMap holds the ProxyConfig JSON under `config.json`.
- Configs over the budget (~900 KiB; Kubernetes objects are limited to about 1 MiB): the
  JSON is gzipped and split into shard ConfigMaps (`<configmap>-a0`, `-a1`, … in slot `a`
  or `b`) holding `binaryData.part`; the ConfigMap itself then holds only `manifest.json`
  naming the shards, the revision and the SHA-256 of the compressed bytes. The operator
  writes the shards of the slot the manifest does not name, then the manifest (last), so a
  reader never sees a half-written set: a shard overwritten under a reader (two quick
  revisions) fails the checksum and the read is retried from the manifest.

Robustness: objects are filtered by name on the client side too (some servers ignore field
selectors), every request has a timeout, a watch that ends or fails is re-listed with
backoff, and a config that cannot be decoded is a `ConfigRejected` (the last good one keeps
serving). Credential values never appear in messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from routeway.proxyconfig import credential_ref_from_store_key, parse_proxy_config
from routeway_proxy.process import ConfigLoaded, ConfigRejected, ConfigUpdate

log = logging.getLogger("routeway.proxy.kube")

CONFIG_KEY = "config.json"
MANIFEST_KEY = "manifest.json"
SHARD_KEY = "part"
REVISION_ANNOTATION = "routeway.dev/config-revision"
SLOTS = ("a", "b")
MAX_SHARDS = 16
DEFAULT_BUDGET = 900 * 1024
WATCH_TIMEOUT = 240  # seconds a server-side watch lasts before a fresh list
REQUEST_TIMEOUT = 15.0
TORN_READ_RETRIES = 5


class ConfigTooLarge(ValueError):
    """Even compressed, the config needs more shards than a proxy's Role may read."""


class TornConfig(ValueError):
    """Shards changed under the reader (or are missing): read the manifest again."""


# --- the storage format ---------------------------------------------------------------------


def shard_name(configmap: str, slot: str, index: int) -> str:
    return f"{configmap}-{slot}{index}"


def config_object_names(configmap: str) -> list[str]:
    """Every ConfigMap name a proxy may need to read: the Role's resourceNames."""
    return [configmap] + [shard_name(configmap, s, i) for s in SLOTS for i in range(MAX_SHARDS)]


@dataclass(frozen=True)
class EncodedConfig:
    data: dict[str, str]  # the ConfigMap's data: config.json, or manifest.json
    shards: tuple[tuple[str, dict[str, str]], ...] = ()  # (name, binaryData) written first
    slot: str | None = None


def encode_config(
    config_json: bytes, revision: str, configmap: str, *, slot: str = "a", budget: int = DEFAULT_BUDGET
) -> EncodedConfig:
    """Inline when it fits the budget; else gzip, base64 and split into shards of `slot`."""
    if len(config_json) <= budget:
        return EncodedConfig({CONFIG_KEY: config_json.decode("utf-8")})
    compressed = gzip.compress(config_json, compresslevel=6, mtime=0)
    chunk = max(1, budget * 3 // 4)  # base64 grows by 4/3: each shard's data stays within budget
    parts = [compressed[i : i + chunk] for i in range(0, len(compressed), chunk)]
    if len(parts) > MAX_SHARDS:
        raise ConfigTooLarge(
            f"config of {len(config_json)} bytes needs {len(parts)} shards after compression "
            f"(at most {MAX_SHARDS})"
        )
    names = [shard_name(configmap, slot, i) for i in range(len(parts))]
    manifest = {
        "revision": revision,
        "encoding": "gzip",
        "slot": slot,
        "shards": names,
        "sha256": hashlib.sha256(compressed).hexdigest(),
        "size": len(config_json),
    }
    shards = tuple(
        (name, {SHARD_KEY: base64.b64encode(part).decode("ascii")})
        for name, part in zip(names, parts, strict=True)
    )
    return EncodedConfig({MANIFEST_KEY: json.dumps(manifest, sort_keys=True)}, shards, slot)


def manifest_slot(data: Mapping[str, str] | None) -> str | None:
    """The shard slot a ConfigMap's manifest names (None: inline or absent)."""
    if not data or MANIFEST_KEY not in data:
        return None
    try:
        slot = json.loads(data[MANIFEST_KEY]).get("slot")
    except (ValueError, AttributeError):
        return None
    return slot if slot in SLOTS else None


async def decode_config(
    data: Mapping[str, str], fetch_shard: Callable[[str], Awaitable[Mapping[str, Any] | None]]
) -> bytes:
    """The ProxyConfig JSON bytes a ConfigMap's data stands for; TornConfig if shards disagree."""
    if CONFIG_KEY in data:
        return data[CONFIG_KEY].encode("utf-8")
    if MANIFEST_KEY not in data:
        raise ValueError(f"the ConfigMap has neither {CONFIG_KEY} nor {MANIFEST_KEY}")
    manifest = json.loads(data[MANIFEST_KEY])
    if manifest.get("encoding") != "gzip":
        raise ValueError(f"unsupported config encoding {manifest.get('encoding')!r}")
    parts = []
    for name in manifest["shards"]:
        shard = await fetch_shard(name)
        binary = (shard or {}).get("binaryData") or {}
        if SHARD_KEY not in binary:
            raise TornConfig(f"shard {name} is missing")
        try:
            parts.append(base64.b64decode(binary[SHARD_KEY], validate=True))
        except binascii.Error:
            raise TornConfig(f"shard {name} is not base64") from None
    compressed = b"".join(parts)
    if hashlib.sha256(compressed).hexdigest() != manifest["sha256"]:
        raise TornConfig("shards do not match the manifest checksum")
    return gzip.decompress(compressed)


def decode_credentials(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """Secret data (credential store key → base64 value) as credentialRef → value."""
    out: dict[str, str] = {}
    for key, raw in ((secret or {}).get("data") or {}).items():
        try:
            ref = credential_ref_from_store_key(key)
            out[ref] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            log.warning("credential %s is not a valid entry; skipped", key)
    return out


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
            try:
                raw = await decode_config(
                    configmap.get("data") or {}, lambda n: self._get(api, "configmaps", n)
                )
                config = parse_proxy_config(raw)
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
            return ConfigLoaded(config, decode_credentials(secret), source)
        return ConfigRejected(source, (f"{source}: shards kept changing while being read",))

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
