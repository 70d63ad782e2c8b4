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

import mmap
import struct
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.values import MutexValue

from routeway_proxy.ledger import RequestLedger

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


class PlainValue:
    """A single-process metric value without a lock: the hot path adds to `value` directly.

    Why: `Counter.inc` is five Python calls (observability check, value object, lock enter and
    exit) and a request makes seven updates. In one process every update happens on the event
    loop thread and a scrape (in the executor) only reads the float, which is atomic under the
    GIL, so no lock is needed and `/metrics` stays exact. It replaces prometheus_client's
    `MutexValue` inside the bound children (`adopt_value`), so collection is unchanged.
    Multiprocess mode keeps its mmap-backed values: there each update must reach the file that
    the supervisor reads (see `MmapValue`).
    """

    __slots__ = ("_exemplar", "value")

    _multiprocess = False

    def __init__(self, value: float = 0.0) -> None:
        self.value = value
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self.value

    def get_exemplar(self) -> Any:
        return self._exemplar


class MmapValue:
    """Multiprocess mode: `MmapedValue.inc` without its lock and fork check, one call.

    Why: prometheus_client's `inc` takes a process-wide lock, calls `os.getpid()` to notice a
    fork, and goes through two helper functions, for each of the seven updates per request.
    Workers are spawned (never forked after their values exist) and update metrics only from
    the event loop thread, so neither is needed. The write is the library's own: the new value
    and a zero timestamp packed into the value's 16-byte slot of the worker's mmap file with
    one slice assignment (atomic for readers, as in `mmap_dict._pack_two_doubles`), and the
    wrapped value object keeps its `_value` current for any later `inc()` of its own.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def inc(self, amount: float) -> None:
        inner = self._inner
        value = inner._value + amount
        inner._value = value
        inner._timestamp = 0.0
        file = inner._file
        position = file._positions[inner._key]
        file._m[position : position + 16] = _pack_two_doubles(value, 0.0)


_pack_two_doubles = struct.Struct(b"dd").pack


def _is_mmap_value(value: object) -> bool:
    """Whether `value` is prometheus_client's MmapedValue with the internals `MmapValue` uses
    (any other shape keeps the library's own `inc`)."""
    if not getattr(value, "_multiprocess", False):
        return False
    file = getattr(value, "_file", None)
    key = getattr(value, "_key", None)
    positions = getattr(file, "_positions", None)
    return (
        isinstance(getattr(value, "_value", None), float)
        and isinstance(positions, dict)
        and key in positions
        and isinstance(getattr(file, "_m", None), mmap.mmap)
    )


def make_fast(value: Any) -> Any:
    """The object the hot path updates for a metric value (see `PlainValue`, `MmapValue`)."""
    if type(value) is MutexValue:
        return PlainValue(value.get())  # type: ignore[no-untyped-call]
    if _is_mmap_value(value):
        return MmapValue(value)
    return value


def adopt_value(holder: object, attribute: str = "_value") -> Any:
    """The value object behind a metric child, for the hot path: in single-process mode the
    child's `MutexValue` is swapped for a `PlainValue` (keeping what it counted so far), and
    children are shared between routing tables, so a value already adopted is returned as it
    is; in multiprocess mode an `MmapValue` writing to the child's own slot."""
    value = getattr(holder, attribute)
    fast = make_fast(value)
    if type(fast) is PlainValue and fast is not value:
        setattr(holder, attribute, fast)
    return fast


class HistogramValues:
    """The sum and bucket values of one histogram child, updated without `observe()`."""

    __slots__ = ("bounds", "buckets", "plain", "total")

    def __init__(self, child: Histogram) -> None:
        self.total = adopt_value(child, "_sum")
        buckets: list[Any] = getattr(child, "_buckets")  # noqa: B009  (private: no public accessor)
        fast = [make_fast(value) for value in buckets]
        for i, value in enumerate(fast):
            if type(value) is PlainValue:
                buckets[i] = value  # collection reads the child's list
        self.buckets = tuple(fast)
        self.bounds: tuple[float, ...] = tuple(getattr(child, "_upper_bounds"))  # noqa: B009
        self.plain = type(self.total) is PlainValue

    def observe(self, amount: float) -> None:
        """`Histogram.observe` for finite amounts: the first bucket whose bound is >= amount."""
        bucket = self.buckets[bisect_left(self.bounds, amount)]
        if self.plain:
            self.total.value += amount
            bucket.value += 1
        else:
            self.total.inc(amount)
            bucket.inc(1)


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
    """All metric families of one proxy process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # first in the registry: a collect on the loop thread flushes it before reading the rest
        self.ledger = RequestLedger()
        registry.register(self.ledger)
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
            CONFIG_INFO,
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
    """Values for one (route, backend) pair; status-code values are bound on first use.

    The hot path updates the children's value objects (see `PlainValue`), not the children,
    so each request costs a few attribute updates instead of ~25 Python calls.
    """

    __slots__ = (
        "_codes",
        "_errors",
        "_metrics",
        "_plain",
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
        self.duration = HistogramValues(metrics.duration.labels(route, backend))
        self.ttft = HistogramValues(metrics.ttft.labels(route, backend))
        self.prompt_tokens = adopt_value(metrics.tokens.labels(route, backend, "prompt"))
        self.completion_tokens = adopt_value(metrics.tokens.labels(route, backend, "completion"))
        self._plain = self.duration.plain
        self._codes: dict[int, Any] = {}
        self._errors: dict[str, Counter] = {}
        self._retries: dict[str, Counter] = {}

    def count_request(self, code: int, seconds: float) -> None:
        value = self._codes.get(code)
        if value is None:
            value = self._codes[code] = adopt_value(
                self._metrics.requests.labels(self.route, self.backend, str(code))
            )
        duration = self.duration
        bucket = duration.buckets[bisect_left(duration.bounds, seconds)]
        if self._plain:
            value.value += 1
            duration.total.value += seconds
            bucket.value += 1
        else:
            value.inc(1)
            duration.total.inc(seconds)
            bucket.inc(1)

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
