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
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
overloaded (no concurrency slot), or upstream-5xx-other (a 500/501... not retried)."""


class ProxyMetrics:
    """All metric families of one proxy process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            REQUESTS,
            "Client requests answered, by route, backend and status code.",
            ["route", "backend", "code"],
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
            "Tokens reported by upstream usage, by type.",
            ["route", "backend", "type"],
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
        self.ejected_until = Gauge(
            EJECTED_UNTIL,
            "Unix time until which the backend is ejected.",
            ["backend"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.config_info = Gauge(
            "routeway_config_info",
            "1 for the config revision being served.",
            ["revision"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.reloads = Counter(
            "routeway_config_reloads", "Configs applied or rejected.", ["result"], registry=registry
        )

    def bind_pair(self, route: str, backend: str) -> PairMetrics:
        return PairMetrics(self, route, backend)


class PairMetrics:
    """Children for one (route, backend) pair; status-code children are made on first use."""

    __slots__ = (
        "_codes",
        "_errors",
        "_metrics",
        "_retries",
        "backend",
        "completion_tokens",
        "duration",
        "prompt_tokens",
        "route",
        "ttft",
    )

    def __init__(self, metrics: ProxyMetrics, route: str, backend: str) -> None:
        self._metrics = metrics
        self.route = route
        self.backend = backend
        self.duration = metrics.duration.labels(route, backend)
        self.ttft = metrics.ttft.labels(route, backend)
        self.prompt_tokens = metrics.tokens.labels(route, backend, "prompt")
        self.completion_tokens = metrics.tokens.labels(route, backend, "completion")
        self._codes: dict[int, Counter] = {}
        self._errors: dict[str, Counter] = {}
        self._retries: dict[str, Counter] = {}

    def count_request(self, code: int, seconds: float) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._metrics.requests.labels(self.route, self.backend, str(code))
        child.inc()
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
        if prompt:
            self.prompt_tokens.inc(prompt)
        if completion:
            self.completion_tokens.inc(completion)
