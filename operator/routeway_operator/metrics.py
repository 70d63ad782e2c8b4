"""Prometheus metrics of the operator (served when ROUTEWAY_METRICS_PORT is set; the chart's
ServiceMonitor scrapes them): how often and how long reconciles run, how they end, how much
work is queued, and what was written. A fresh registry per operator keeps tests independent.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from routeway.rollout.analysis import VERDICTS
from routeway.rollout.state import PHASES


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "routeway_operator_reconciles",
            "Reconciles by kind of key and result (ok, retry, failed, crashed).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "routeway_operator_reconcile_seconds",
            "Time of one reconcile (snapshot, translate, render, writes).",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.pending = Gauge(
            "routeway_operator_pending_keys", "Keys marked dirty or being reconciled.", registry=self.registry
        )
        self.config_revisions = Counter(
            "routeway_operator_config_revisions",
            "New config revisions applied to a gateway's ConfigMap.",
            registry=self.registry,
        )

        self.rollout_phase = Gauge(
            "routeway_rollout_phase",
            "1 for a route's current rollout phase (Stable, Progressing, Paused, RolledBack), else 0.",
            ["route", "phase"],
            registry=self.registry,
        )
        self.rollout_canary_weight = Gauge(
            "routeway_rollout_canary_weight",
            "Percent of a route's traffic its canary arm is served.",
            ["route"],
            registry=self.registry,
        )
        self.rollout_analysis = Counter(
            "routeway_rollout_analysis",
            "Rollout analysis checks by route and verdict (pass, fail, inconclusive).",
            ["route", "verdict"],
            registry=self.registry,
        )

    def forget_route(self, route: str) -> None:
        """Drop a route's rollout series (it left the gateway, or was deleted)."""
        removals = [
            *((self.rollout_phase, (route, phase)) for phase in PHASES),
            (self.rollout_canary_weight, (route,)),
            *((self.rollout_analysis, (route, verdict)) for verdict in VERDICTS),
        ]
        for metric, labels in removals:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)

    def serve(self, port: int) -> None:
        """Serve /metrics on `port` from a background thread (prometheus-client's server)."""
        self._server, _ = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
