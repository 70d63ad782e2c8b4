"""`ProxyRuntime`: the config a proxy process serves, swapped atomically.

Why this object: the process helper (file watcher, ConfigMap watcher, worker management) only
needs to hand over a parsed `ProxyConfig` and the credential values, or report that a new
config could not be loaded; the request path only needs the current `RoutingTable`. This is
the one place both meet.

- `apply` builds a complete new table first and then replaces the reference in one
  assignment; a request reads `runtime.table` once and keeps that table, so requests in flight
  finish on the config they started with, and a failed build leaves the old table serving.
- `reject` records why a config was not applied (shown at /routes and /config); the last
  good config keeps serving.
- Neither logs: the caller (`process.ConfigApplier`) logs each load and rejection once for
  a whole process group, which a runtime per worker could not.
- Credentials live here, never in the ProxyConfig; `redact` uses them to scrub any document
  shown on the admin port.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from routeway.proxyconfig import ProxyConfig
from routeway_proxy.cache.configure import GatewayCache
from routeway_proxy.limits.local import Clock
from routeway_proxy.limits.wiring import ProcessLimits
from routeway_proxy.metrics import ProxyMetrics
from routeway_proxy.redact import redact_document
from routeway_proxy.table import BackendState, RoutingTable, build_routing_table


@dataclass(frozen=True)
class Rejection:
    source: str
    errors: tuple[str, ...]
    at: float  # unix time

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "errors": list(self.errors), "at": self.at}


class ProxyRuntime:
    """Holds the routing table of one proxy process.

    `registry`: where the request-path metrics are registered (a fresh one by default, so two
    runtimes in one test process do not collide); `clock`: monotonic seconds for passive
    health, injectable for tests.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        count_reloads: bool = True,
        limits_table: str | None = None,
        limits_clock: Clock = time.time,
    ) -> None:
        self.metrics = ProxyMetrics(registry if registry is not None else CollectorRegistry())
        # request and token budgets: `limits_table` is a worker's group table (limits/wiring.py)
        self.limits = ProcessLimits(self.metrics.registry, shared_table=limits_table, clock=limits_clock)
        # the response cache: per-route LRUs and the shared Redis tier, reconfigured by `apply`
        self.cache = GatewayCache(self.metrics.registry)
        # In a worker group every worker applies every reload; only one of them counts, so the
        # group's summed `routeway_config_reloads_total` counts each reload once.
        self._count_reloads = count_reloads
        self.clock = clock
        # a plain attribute, not a property: the request path reads it on every request
        self.table: RoutingTable | None = None
        self._states: dict[str, BackendState] = {}
        self._credential_values: frozenset[str] = frozenset()
        self._last_rejection: Rejection | None = None
        self._warnings: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.table is not None

    @property
    def config(self) -> ProxyConfig | None:
        table = self.table
        return table.config if table is not None else None

    @property
    def last_rejection(self) -> Rejection | None:
        return self._last_rejection

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems with some objects that did not stop the config being served (local mode)."""
        return self._warnings

    def apply(
        self, config: ProxyConfig, credentials: Mapping[str, str], warnings: Sequence[str] = ()
    ) -> None:
        """Serve `config` from now on; `credentials` maps "ns/secret/key" refs to values;
        `warnings` are shown at /routes until the next apply."""
        table, states = build_routing_table(config, credentials, self._states, self.metrics, self.clock)
        self.limits.configure(config.gateway.limits, credentials)
        previous = self.table
        self.cache.apply(config, credentials)  # before the table: its cached routes find their caches
        self.table = table
        self._states = states
        self._credential_values = frozenset(v for v in credentials.values() if len(v) >= 4)
        self._last_rejection = None
        self._warnings = tuple(warnings)
        metrics = self.metrics
        if previous is not None and previous.revision != config.revision:
            # Zero first: under multiprocess mode the worker's mmap keeps a removed series at
            # its last value; single-process registries drop it, so the series do not pile up.
            metrics.config_info.labels(previous.revision).set(0)
            metrics.config_info.remove(previous.revision)
        metrics.config_info.labels(config.revision).set(1)
        if self._count_reloads:
            metrics.reloads.labels("applied").inc()

    def reject(self, source: str, errors: Sequence[str]) -> None:
        """A new config from `source` could not be loaded; keep serving the last good one."""
        self._last_rejection = Rejection(source, tuple(errors), time.time())
        if self._count_reloads:
            self.metrics.reloads.labels("rejected").inc()

    def redact(self, document: Any) -> Any:
        """`document` with credential values and URL userinfo replaced ."""
        return redact_document(document, self._credential_values)
