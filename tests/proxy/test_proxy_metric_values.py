"""The hot path's metric updates, direct or through the public API, give exactly what
prometheus_client's own API gives (how the path is chosen: test_proxy_fast_paths.py)."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, multiprocess, values
from routeway_proxy.metric_values import (
    FAST_VALUES,
    PUBLIC_VALUES,
    FastValues,
    HistogramValues,
    MetricValues,
    MmapValue,
)
from routeway_proxy.metrics import (
    CONFIG_INFO,
    LATENCY_BUCKETS,
    GroupCollector,
    ProxyMetrics,
    adopt_value,
)
from routeway_proxy.metrics_proof import prove_fast_values
from routeway_proxy.stats import read_stats


@pytest.mark.parametrize("values", [FAST_VALUES, PUBLIC_VALUES], ids=["fast", "public"])
def test_pair_updates_match_the_public_api_and_survive_rebinding(values: MetricValues) -> None:
    direct = ProxyMetrics(CollectorRegistry(), values)
    public = ProxyMetrics(CollectorRegistry())
    pair = direct.bind_pair("r", "b")
    observations = [0.0, 0.005, 0.0051, 0.3, 1.0, 299.0, 1e6, *LATENCY_BUCKETS]
    for seconds in observations:
        pair.count_request(200, seconds)
        public.requests.labels("r", "b", "200", "").inc()
        public.duration.labels("r", "b").observe(seconds)
        pair.ttft.observe(seconds)
        public.ttft.labels("r", "b").observe(seconds)
    pair.count_tokens(7, 0)
    public.tokens.labels("r", "b", "prompt", "").inc(7)
    # a new routing table binds the same children again: nothing counted so far is lost
    again = direct.bind_pair("r", "b")
    again.count_request(503, 0.2)
    public.requests.labels("r", "b", "503", "").inc()
    public.duration.labels("r", "b").observe(0.2)
    again.count_tokens(1, 2)
    public.tokens.labels("r", "b", "prompt", "").inc(1)
    public.tokens.labels("r", "b", "completion", "").inc(2)

    def samples(metrics: ProxyMetrics) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        return sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in metrics.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert samples(direct) == samples(public)
    stats = read_stats(direct.registry).for_pair("r", "b")
    assert stats.by_code == {"200": len(observations), "503": 1.0}
    assert math.isclose(stats.latency.total, sum(observations) + 0.2)


def test_in_flight_value_reads_back_at_scrape() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    value = adopt_value(metrics.in_flight.labels("r"))
    value.inc(1)
    value.inc(1)
    assert read_stats(metrics.registry).in_flight == {"r": 2.0}
    assert adopt_value(metrics.in_flight.labels("r")) is value
    value.inc(-1)
    assert read_stats(metrics.registry).in_flight == {"r": 1.0}


def test_mmap_value_writes_what_the_library_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multiprocess mode: the direct mmap write reads back through MultiProcessCollector."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
    ours = value_class("counter", "t", "t_total", ("k",), ("ours",), "help")
    theirs = value_class("counter", "t", "t_total", ("k",), ("theirs",), "help")
    gauge = value_class("gauge", "g", "g", ("k",), ("x",), "help", multiprocess_mode="livesum")
    fast = FAST_VALUES.make(ours)
    assert isinstance(fast, MmapValue)
    many = [
        FAST_VALUES.make(value_class("counter", "t", "t_total", ("k",), (f"n{i}",), "help"))
        for i in range(2000)
    ]
    for amount in (1, 2.5, 7):
        fast.inc(amount)
        theirs.inc(amount)
    for value in many:  # enough new keys that the file grew and was mapped again
        value.inc(1)
    fast.inc(1)
    theirs.inc(1)
    FAST_VALUES.make(gauge).inc(1)
    FAST_VALUES.make(gauge).inc(1)
    FAST_VALUES.make(gauge).inc(-1)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    found = {(s.name, s.labels.get("k")): s.value for family in registry.collect() for s in family.samples}
    assert found[("t_total", "ours")] == found[("t_total", "theirs")] == 11.5
    assert found[("t_total", "n1999")] == 1.0
    assert found[("g", "x")] == 1.0
    close_multiprocess_files()


def close_multiprocess_files() -> None:
    """Close the mmap files the test's value classes opened (older releases cannot)."""
    close = getattr(values, "close_all_multiprocess_files", None)
    if close is not None:
        close()


def test_group_collector_drops_revisions_no_worker_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker files keep every revision ever served at 0; the group's /metrics shows current ones."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    try:
        for pid, served in ((11, ["r1", "r2", "r3"]), (12, ["r1", "r2"])):
            value_class = values.MultiProcessValue(lambda pid=pid: pid)  # type: ignore[no-untyped-call]
            revisions = {}
            for revision in served:  # what ProxyRuntime.apply does on each new revision
                for old in revisions.values():
                    old.set(0)
                revisions[revision] = value_class(
                    "gauge",
                    CONFIG_INFO,
                    CONFIG_INFO,
                    ("revision",),
                    (revision,),
                    "h",
                    multiprocess_mode="livemax",
                )
                revisions[revision].set(1)
        registry = CollectorRegistry()
        registry.register(GroupCollector(str(tmp_path)))
        shown = {
            s.labels["revision"]: s.value
            for family in registry.collect()
            for s in family.samples
            if family.name == CONFIG_INFO
        }
        assert shown == {"r3": 1.0, "r2": 1.0}  # one worker still on r2: both are served
        plain = CollectorRegistry()
        multiprocess.MultiProcessCollector(plain, path=str(tmp_path))  # type: ignore[no-untyped-call]
        assert (
            len([s for f in plain.collect() for s in f.samples if f.name == CONFIG_INFO]) == 3
        )  # what it fixes
    finally:
        close_multiprocess_files()


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_the_installed_prometheus_client_passes_the_proof(multiprocess: bool) -> None:
    """Fails when a prometheus-client upgrade changes what the direct updates rely on: the
    proxy still works (through the public API, with a warning), but look at metric_values.py."""
    assert prove_fast_values(FAST_VALUES, multiprocess=multiprocess) is None


class DetachedValues(FastValues):
    """Values never put into the children: what they count is never collected."""

    def adopt(self, holder: Any, attribute: str = "_value") -> Any:
        return self.make(getattr(holder, attribute))


class SwappedSlot(MmapValue):
    """A changed mmap layout: (timestamp, value) where the library now reads (value, timestamp)."""

    __slots__ = ()

    def inc(self, amount: float) -> None:
        inner = self._inner
        inner._value += amount
        position = inner._file._positions[inner._key]
        inner._file._m[position : position + 16] = struct.pack("dd", 0.0, inner._value)


class NeighbourSlot(MmapValue):
    """A changed mmap layout: the value's slot is 16 bytes further than the library says,
    over the next entry."""

    __slots__ = ()

    def inc(self, amount: float) -> None:
        inner = self._inner
        inner._value += amount
        position = inner._file._positions[inner._key] + 16
        inner._file._m[position : position + 16] = struct.pack("dd", inner._value, 0.0)


class MmapValues(FastValues):
    def __init__(self, slot: type[MmapValue]) -> None:
        super().__init__()
        self.slot = slot

    def make(self, value: Any) -> Any:
        fast = super().make(value)
        return self.slot(value) if isinstance(fast, MmapValue) else fast


class ShiftedBuckets(FastValues):
    """Every observation counted one bucket too high (a changed `_upper_bounds`)."""

    def histogram(self, child: Any) -> HistogramValues:
        values = super().histogram(child)
        values.bounds = (-math.inf, *values.bounds[:-2], math.inf)
        return values


class LibraryValues(FastValues):
    """Leaves every value object as the library made it: correct, but not what it claims."""

    def make(self, value: Any) -> Any:
        return value


class MovedAttribute(FastValues):
    def adopt(self, holder: Any, attribute: str = "_value") -> Any:
        raise AttributeError(f"{type(holder).__name__!r} object has no attribute {attribute!r}")


@pytest.mark.parametrize(
    ("values", "multiprocess", "problem"),
    [
        (DetachedValues(), False, "samples differ"),
        (MmapValues(SwappedSlot), True, "samples differ"),
        (MmapValues(NeighbourSlot), True, ""),  # the file reads back corrupted, or values differ
        (ShiftedBuckets(), False, "samples differ"),
        (ShiftedBuckets(), True, "samples differ"),
        (LibraryValues(), False, "it left a value object it does not know how to update directly"),
        (MovedAttribute(), False, "AttributeError: 'Histogram' object has no attribute '_sum'"),
    ],
    ids=[
        "detached",
        "swapped-slot",
        "neighbour-slot",
        "shifted",
        "shifted-mp",
        "library",
        "moved",
    ],
)
def test_a_broken_fast_path_fails_the_proof(values: FastValues, multiprocess: bool, problem: str) -> None:
    found = prove_fast_values(values, multiprocess=multiprocess)
    assert found is not None and problem in found, found


def test_the_proof_leaves_the_process_metrics_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multiprocess: nothing is written to the worker's own directory, and the library's value
    class and PROMETHEUS_MULTIPROC_DIR are what they were."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.ValueClass
    registry = CollectorRegistry()
    ProxyMetrics(registry, FAST_VALUES).bind_pair("r", "b").count_request(200, 0.1)
    before = read_samples(registry)
    assert prove_fast_values(FAST_VALUES, multiprocess=True) is None
    assert prove_fast_values(FAST_VALUES, multiprocess=False) is None
    assert list(tmp_path.iterdir()) == []
    assert values.ValueClass is value_class
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert read_samples(registry) == before


def read_samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    )
