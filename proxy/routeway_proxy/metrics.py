"""Prometheus metrics of the request path, with label children bound once per config.

Why bound children: `metric.labels(...)` hashes and looks up the label tuple on every call;
the routing table binds the children of each (route, backend) pair once per apply, so the hot
path does an attribute read and an `inc()`.

Labels stay bounded: `route` and `backend` are ids from the applied config (or "" before a
request was routed — an unknown model never becomes a label), `code` is an HTTP status,
`reason`/`type`/`result` come from fixed vocabularies.

`code` is the status the client got; for a stream cut after its 200 headers went out it is
the status the failure would have had (504 idle timeout, 502 upstream drop), so error rates
count it; 499 means the client went away first.

Multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported): every
gauge says how to merge workers; `Info` is not supported there, so the config revision is a
gauge set to 1 for the current revision. `routeway_backend_ejected_until_seconds` is a unix
time, so the merged maximum says whether any worker has the backend ejected.

How values are updated — directly (`metric_values.FastValues`) or through prometheus-client's
public API — is chosen once per process by the `METRIC_VALUES` seam: the direct updates are
used only when `metrics_proof.prove_fast_values` shows, on scratch metrics, that what they write reads back
through the public API exactly as the public API's own updates do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from routeway.proxyconfig import Pricing
from routeway_proxy.arm_metrics import ArmFamilies
from routeway_proxy.fastpaths import Choice, Seam
from routeway_proxy.ledger import RequestLedger
from routeway_proxy.metric_values import (
    HistogramValues,
    MetricValues,
    PlainValue,
)
from routeway_proxy.usage import ClientUsage, ClientValues, UsageFamilies, price

if TYPE_CHECKING:
    from routeway_proxy.access_log import AccessLog

__all__ = [
    "METRIC_VALUES",
    "GroupCollector",
    "PairMetrics",
    "PlainValue",
    "ProxyMetrics",
    "adopt_value",
]

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

REQUESTS = "routeway_requests"
DURATION = "routeway_request_duration_seconds"
TTFT = "routeway_time_to_first_token_seconds"
EJECTED_UNTIL = "routeway_backend_ejected_until_seconds"
IN_FLIGHT = "routeway_requests_in_flight"

ErrorReason = str
"""connect-failure, timeout (first byte), idle-timeout, total-timeout, disconnect, 5xx, 429,
overloaded (no concurrency slot), upstream-5xx (a 500/501... not retried), or redirect (a 3xx,
answered 502)."""


CONFIG_INFO = "routeway_config_info"


class GroupCollector:
    """A worker group's metrics, read from their files, minus revisions no worker serves.

    Why: prometheus_client cannot delete a series from a worker's file, so every config a
    worker ever served stays there with `routeway_config_info` 0, and a gateway synced by
    GitOps all day would grow a series per change. A single process removes the old series;
    this gives the group's `/metrics` the same shape (several revisions at 1 only while
    workers switch).
    """

    def __init__(self, path: str) -> None:
        from prometheus_client import multiprocess

        self._inner = multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():  # type: ignore[no-untyped-call]
            if family.name == CONFIG_INFO:
                family.samples = [sample for sample in family.samples if sample.value != 0]
            yield family


class ProxyMetrics:
    """All metric families of one proxy process, registered in `registry`; `values` says how
    the hot path updates them (default: this process's choice, `METRIC_VALUES`)."""

    def __init__(self, registry: CollectorRegistry, values: MetricValues | None = None) -> None:
        self.registry = registry
        self.values = values if values is not None else METRIC_VALUES.get()
        # first in the registry: a collect on the loop thread flushes it before reading the rest
        self.ledger = RequestLedger()
        registry.register(self.ledger)
        # the request log line (`--access-log`, access_log.py); None: off, one check per request
        self.access: AccessLog | None = None
        self.requests = Counter(
            REQUESTS,
            "Client requests answered, by route, backend, status code and client (ModelClient id).",
            ["route", "backend", "code", "client"],
            registry=registry,
        )
        self.duration = Histogram(
            DURATION,
            "Time from request to the end of the answer.",
            ["route", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            TTFT,
            "Streaming: time from request to the first event relayed.",
            ["route", "backend"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "routeway_tokens",
            "Tokens reported by upstream usage, by type and client (ModelClient id).",
            ["route", "backend", "type", "client"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "routeway_upstream_errors",
            "Failed upstream attempts, by reason.",
            ["route", "backend", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "routeway_retries",
            "Further attempts made, by the reason of the failure before.",
            ["route", "backend", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            IN_FLIGHT,
            "Requests being answered, by route.",
            ["route"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.ejections = Counter(
            "routeway_backend_ejections",
            "Backends ejected by outlier detection.",
            ["backend"],
            registry=registry,
        )
        self.holds = Counter(
            "routeway_backend_holds",
            "Backends put on hold by their own Retry-After (a 429 or 503): skipped until then.",
            ["backend"],
            registry=registry,
        )
        self.ejected_until = Gauge(
            EJECTED_UNTIL,
            "Unix time until which the backend is ejected or on hold.",
            ["backend"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.config_info = Gauge(
            CONFIG_INFO,
            "1 for the config revision being served.",
            ["revision"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.reloads = Counter(
            "routeway_config_reloads", "Configs applied or rejected.", ["result"], registry=registry
        )
        # client connections (client_conn.py): per connection, never per request
        self.client_connections_open = Gauge(
            "routeway_client_connections_open",
            "Client connections open.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.client_connections_closed = Counter(
            "routeway_client_connections_closed",
            "Client connections the gateway closed itself, by reason (over_limit: refused with 503 "
            "beyond --max-connections; header_timeout, body_timeout, idle_timeout; write_timeout: an "
            "answer not read for --idle-timeout).",
            ["reason"],
            registry=registry,
        )
        self.arms = ArmFamilies(registry)  # per-revision observations (rollout analysis)
        self.usage = UsageFamilies(registry)  # cost, and per-client windows (GET /usage)

    def bind_pair(self, route: str, backend: str, pricing: Pricing | None = None) -> PairMetrics:
        return PairMetrics(self, route, backend, pricing)


class PairMetrics:
    """Values for one (route, backend) pair; status-code values are bound on first use.

    The hot path updates the children's value objects (see `metric_values.PlainValue`), not
    the children, so each request costs a few attribute updates instead of ~25 Python calls;
    on the public path (`PublicValues`) the same methods call the children's `inc`/`observe`.
    """

    __slots__ = (
        "_clients",
        "_codes",
        "_errors",
        "_metrics",
        "_plain",
        "_retries",
        "_values",
        "backend",
        "completion_tokens",
        "cost",
        "duration",
        "pricing",
        "prompt_tokens",
        "route",
        "ttft",
    )

    def __init__(
        self, metrics: ProxyMetrics, route: str, backend: str, pricing: Pricing | None = None
    ) -> None:
        self._metrics = metrics
        self._values = values = metrics.values
        self.route = route
        self.backend = backend
        self.pricing = pricing  # of the backend spec this pair's answers come from
        self.duration: Any = values.histogram(metrics.duration.labels(route, backend))
        self.ttft: Any = values.histogram(metrics.ttft.labels(route, backend))
        self.prompt_tokens = values.adopt(metrics.tokens.labels(route, backend, "prompt", ""))
        self.completion_tokens = values.adopt(metrics.tokens.labels(route, backend, "completion", ""))
        self.cost: Any = (
            None
            if pricing is None
            else values.adopt(metrics.usage.cost.labels("", route, backend, pricing.currency))
        )
        self._clients: dict[str, ClientValues] = {}
        # plain: every value is a PlainValue, updated with `+=` (single-process fast path)
        self._plain = (
            isinstance(self.duration, HistogramValues)
            and self.duration.plain
            and type(self.prompt_tokens) is PlainValue
            and type(self.completion_tokens) is PlainValue
        )
        self._codes: dict[int, Any] = {}
        self._errors: dict[str, Counter] = {}
        self._retries: dict[str, Counter] = {}

    def count_request(self, code: int, seconds: float) -> None:
        value = self._codes.get(code)
        if value is None:
            value = self._codes[code] = self._values.adopt(
                self._metrics.requests.labels(self.route, self.backend, str(code), "")
            )
        if self._plain:
            duration = self.duration
            value.value += 1
            duration.total.value += seconds
            duration.buckets[bisect_left(duration.bounds, seconds)].value += 1
        else:
            value.inc(1)
            self.duration.observe(seconds)

    def count_error(self, reason: ErrorReason) -> None:
        child = self._errors.get(reason)
        if child is None:
            child = self._errors[reason] = self._metrics.upstream_errors.labels(
                self.route, self.backend, reason
            )
        child.inc()

    def count_retry(self, reason: ErrorReason) -> None:
        child = self._retries.get(reason)
        if child is None:
            child = self._retries[reason] = self._metrics.retries.labels(self.route, self.backend, reason)
        child.inc()

    def count_tokens(self, prompt: int, completion: int) -> None:
        pricing = self.pricing
        if pricing is not None:
            self.cost.inc(price(pricing, prompt, completion))
        if self._plain:
            if prompt:
                self.prompt_tokens.value += prompt
            if completion:
                self.completion_tokens.value += completion
            return
        if prompt:
            self.prompt_tokens.inc(prompt)
        if completion:
            self.completion_tokens.inc(completion)

    def count_client(
        self, usage: ClientUsage, code: int, seconds: float, prompt: int, completion: int, now: float
    ) -> None:
        """A request of a ModelClient: its labelled values, and its usage windows."""
        values = self._clients.get(usage.client_id)
        if values is None:
            values = self._clients[usage.client_id] = ClientValues(
                self._metrics, self.route, self.backend, self.pricing, usage.client_id
            )
        self.duration.observe(seconds)
        values.count(code, prompt, completion)
        pricing = self.pricing
        if pricing is None:
            usage.add(now, prompt, completion, 0.0, None)
            return
        cost = price(pricing, prompt, completion)
        values.cost.inc(cost)
        usage.add(now, prompt, completion, cost, pricing.currency)


def adopt_value(holder: Any, attribute: str = "_value") -> Any:
    """The object the hot path updates (`inc`) for a counter or gauge child, by this process's
    chosen path (`METRIC_VALUES`): a direct value object, or the child itself."""
    return METRIC_VALUES.get().adopt(holder, attribute)


def _choose_metric_values() -> Choice[MetricValues]:
    # imported here: the proof builds `ProxyMetrics` on scratch metrics (metrics_proof.py)
    from routeway_proxy.metrics_proof import choose_metric_values

    return choose_metric_values()


METRIC_VALUES: Seam[MetricValues] = Seam(_choose_metric_values)
"""This process's metric update path, chosen when the first `ProxyMetrics` is made."""
