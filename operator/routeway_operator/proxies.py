"""Reading a gateway's proxy pods: rollout observations, the config revision each serves and
its clients' usage.

The gateway's ready pods are listed from the API (by the Deployment's selector labels); each
is then read on its admin port. That HTTP read is the one seam (`ProxyReader`): the operator
uses `HttpProxyReader`, tests give a stand-in that serves reports, and everything around it —
the pod list, the samples, the analysis — is the real operator.

Per pod, two documents of the proxy's read-only admin port:
- `GET /observations`: the rollout observations report (routeway.rollout.observations; a
  proxy without the endpoint answers 404 and gives none);
- `GET /readyz`: `{"status": "ready", "revision": …}`, the config revision it serves, which
  gives `ModelGateway.status.proxies` (ready pods serving the current revision);
- `GET /usage` (read separately, `read_usage`, and far less often: every `usage_interval`):
  per ModelClient the requests, tokens and cost of the current minute and UTC day
  (routeway.client_usage), which give `ModelClient.status.usage`.

A pod that cannot be read (timeout, refused, a malformed answer) is skipped: the analysis then
rests on the pods that answered, and below `minRequests` a check is inconclusive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp

from routeway.client_usage import UsageReport, usage_from_json
from routeway.resources import ModelGateway
from routeway.rollout.observations import Report, report_from_json
from routeway_operator.builders import ADMIN_PORT, selector_labels
from routeway_operator.kube import ApiError, KubeApi, path_for

T = TypeVar("T")

log = logging.getLogger("routeway.operator.proxies")

READ_TIMEOUT = 2.0  # seconds per document: a slow pod must not hold a gateway's reconcile


@dataclass(frozen=True)
class ProxyPod:
    name: str
    ip: str
    port: int = ADMIN_PORT


@dataclass(frozen=True)
class ProxyRead:
    """What one pod said: its observations (None: it has none to give) and config revision."""

    report: Report | None
    revision: str | None


class ProxyReader(Protocol):
    """The seam: read one pod's admin port; None when it cannot be reached."""

    async def read(self, pod: ProxyPod) -> ProxyRead | None: ...

    async def read_usage(self, pod: ProxyPod) -> UsageReport | None:
        """The pod's `/usage`; None when it cannot be read or has none (no such endpoint)."""
        ...

    async def close(self) -> None: ...


class HttpProxyReader:
    """The real reader: one shared aiohttp session, short timeouts, nothing retried (the next
    interval reads again)."""

    def __init__(self, timeout: float = READ_TIMEOUT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def read(self, pod: ProxyPod) -> ProxyRead | None:
        base = f"http://{_host(pod.ip)}:{pod.port}"
        try:
            ready = await self._get(f"{base}/readyz")
            if ready is None:
                return None
            observations = await self._get(f"{base}/observations")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("proxy pod %s not read: %s", pod.name, exc or type(exc).__name__)
            return None
        report = None
        if observations is not None:
            try:
                report = report_from_json(observations)
            except ValueError as exc:
                log.info("proxy pod %s: observations not read: %s", pod.name, exc)
        revision = ready.get("revision")
        return ProxyRead(report, revision if isinstance(revision, str) else None)

    async def read_usage(self, pod: ProxyPod) -> UsageReport | None:
        try:
            doc = await self._get(f"http://{_host(pod.ip)}:{pod.port}/usage")
            return usage_from_json(doc) if doc is not None else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("proxy pod %s: usage not read: %s", pod.name, exc or type(exc).__name__)
            return None

    async def _get(self, url: str) -> Mapping[str, Any] | None:
        """The JSON document at `url`; None for a 404 or 503 (no such endpoint, not ready)."""
        async with self._client().get(url, allow_redirects=False) as resp:
            if resp.status in (404, 503):
                return None
            resp.raise_for_status()
            doc = await resp.json(content_type=None)
        if not isinstance(doc, Mapping):
            raise ValueError(f"{url} did not answer a JSON object")
        return doc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


async def ready_pods(api: KubeApi, gateway: ModelGateway) -> list[ProxyPod]:
    """The gateway's proxy pods that are Ready, have an IP and are not being deleted."""
    selector = ",".join(f"{k}={v}" for k, v in sorted(selector_labels(gateway).items()))
    try:
        listing = await api.get(path_for("v1", "pods", gateway.namespace), params={"labelSelector": selector})
    except ApiError as exc:
        raise exc.to_kopf(f"listing proxy pods of {gateway.namespace}/{gateway.name}") from None
    pods = []
    for item in (listing or {}).get("items") or []:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not meta.get("deletionTimestamp"):
            pods.append(ProxyPod(str(meta.get("name")), str(status["podIP"])))
    return sorted(pods, key=lambda p: p.name)


async def read_usage(reader: ProxyReader, pods: Sequence[ProxyPod]) -> list[UsageReport]:
    """Every pod's usage at once; the ones that could not be read are left out."""
    return await _read_all(reader.read_usage, pods, "usage not read")


async def read_pods(reader: ProxyReader, pods: Sequence[ProxyPod]) -> list[ProxyRead]:
    """Every pod read at once; the ones that could not be read are left out."""
    return await _read_all(reader.read, pods, "not read")


async def _read_all(
    read: Callable[[ProxyPod], Awaitable[T | None]], pods: Sequence[ProxyPod], failed: str
) -> list[T]:
    """`read` of every pod concurrently; a pod that fails is logged and skipped (the analysis
    and the usage rest on what remains), one that has nothing to say is skipped quietly."""
    results = await asyncio.gather(*(read(pod) for pod in pods), return_exceptions=True)
    out: list[T] = []
    for pod, result in zip(pods, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("proxy pod %s: %s: %r", pod.name, failed, result)
        elif result is not None:
            out.append(result)
    return out
