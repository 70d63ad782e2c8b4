"""A stand-in at the one point where the operator reads proxy pods (`ProxyReader`), and the
Pods it reads: everything else in the rollout tests is the real operator against kmock.

`StandInProxies` serves what proxies serving the gateway's current ConfigMap would report:
each read of a pod adds `per_read` attempts to every arm of every route that config serves
(cumulative counters, as a proxy's report is), the canary arm's failing when `canary_fails`;
`/readyz`'s revision is the ConfigMap's. A pod named in `unreachable` cannot be read.
`/usage` is `usage[pod name]`, a document as the proxy serves it, parsed by the real parser
(a pod without an entry has no endpoint); `usage_reads` counts the reads and `usage_read_at`
holds when each happened (wall clock, as the operator's own clock).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kmock_ext import RoutewayEmulator
from operator_factories import get
from routeway_operator.proxies import ProxyPod, ProxyRead

from routeway.client_usage import UsageReport, usage_from_json
from routeway.rollout.observations import ArmKey, ArmObservation, Report

STARTED_AT = 1_700_000_000.0


@dataclass
class StandInProxies:
    kmock: RoutewayEmulator
    gateway: str = "gw"
    per_read: int = 50
    canary_fails: bool = False
    unreachable: set[str] = field(default_factory=set)
    counts: dict[tuple[str, ArmKey], ArmObservation] = field(default_factory=dict)
    reads: int = 0
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage_reads: int = 0
    usage_read_at: list[float] = field(default_factory=list)

    def config(self) -> dict[str, Any] | None:
        cm = get(self.kmock, "v1/configmaps", f"routeway-{self.gateway}-config")
        if cm is None:
            return None
        doc: dict[str, Any] = json.loads(cm["data"]["config.json"])
        return doc

    async def read(self, pod: ProxyPod) -> ProxyRead | None:
        if pod.name in self.unreachable:
            return None
        config = self.config()
        if config is None:
            return None
        self.reads += 1
        for route in config["routes"]:
            self._add(pod.name, (route["id"], route["revision"]), failing=False)
            canary = route.get("canary")
            if canary and canary["weight"] > 0:
                self._add(pod.name, (route["id"], canary["revision"]), failing=self.canary_fails)
        arms = {arm: obs for (instance, arm), obs in self.counts.items() if instance == pod.name}
        return ProxyRead(Report(pod.name, STARTED_AT, arms), config["revision"])

    async def read_usage(self, pod: ProxyPod) -> UsageReport | None:
        if pod.name in self.unreachable:
            return None
        self.usage_reads += 1
        self.usage_read_at.append(time.time())
        doc = self.usage.get(pod.name)
        return usage_from_json(doc) if doc is not None else None

    def _add(self, instance: str, arm: ArmKey, failing: bool) -> None:
        before = self.counts.get((instance, arm), ArmObservation())
        extra = (
            ArmObservation(server_error=self.per_read) if failing else ArmObservation(success=self.per_read)
        )
        self.counts[(instance, arm)] = before.merge(extra)

    async def close(self) -> None:
        return None


def proxy_pod(name: str, ip: str, gateway: str = "gw", ready: bool = True) -> dict[str, Any]:
    """A Pod of the gateway's proxy Deployment, as the API would show it once running."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "routeway-proxy", "app.kubernetes.io/instance": gateway},
        },
        "spec": {"containers": [{"name": "proxy", "image": "routeway"}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
