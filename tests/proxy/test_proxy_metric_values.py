"""The hot path's direct metric updates give exactly what prometheus_client's own API gives."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess, values
from routeway_proxy.metrics import (
    CONFIG_INFO,
    LATENCY_BUCKETS,
    GroupCollector,
    MmapValue,
    ProxyMetrics,
    adopt_value,
    make_fast,
)
from routeway_proxy.stats import read_stats


def test_pair_updates_match_the_public_api_and_survive_rebinding() -> None:
    direct = ProxyMetrics(CollectorRegistry())
    public = ProxyMetrics(CollectorRegistry())
    pair = direct.bind_pair("r", "b")
    observations = [0.0, 0.005, 0.0051, 0.3, 1.0, 299.0, 1e6, *LATENCY_BUCKETS]
    for seconds in observations:
        pair.count_request(200, seconds)
        public.requests.labels("r", "b", "200").inc()
        public.duration.labels("r", "b").observe(seconds)
        pair.ttft.observe(seconds)
        public.ttft.labels("r", "b").observe(seconds)
    pair.count_tokens(7, 0)
    public.tokens.labels("r", "b", "prompt").inc(7)
    # a new routing table binds the same children again: nothing counted so far is lost
    again = direct.bind_pair("r", "b")
    again.count_request(503, 0.2)
    public.requests.labels("r", "b", "503").inc()
    public.duration.labels("r", "b").observe(0.2)
    again.count_tokens(1, 2)
    public.tokens.labels("r", "b", "prompt").inc(1)
    public.tokens.labels("r", "b", "completion").inc(2)

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
    fast = make_fast(ours)
    assert isinstance(fast, MmapValue)
    many = [
        make_fast(value_class("counter", "t", "t_total", ("k",), (f"n{i}",), "help")) for i in range(2000)
    ]
    for amount in (1, 2.5, 7):
        fast.inc(amount)
        theirs.inc(amount)
    for value in many:  # enough new keys that the file grew and was mapped again
        value.inc(1)
    fast.inc(1)
    theirs.inc(1)
    make_fast(gauge).inc(1)
    make_fast(gauge).inc(1)
    make_fast(gauge).inc(-1)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    found = {(s.name, s.labels.get("k")): s.value for family in registry.collect() for s in family.samples}
    assert found[("t_total", "ours")] == found[("t_total", "theirs")] == 11.5
    assert found[("t_total", "n1999")] == 1.0
    assert found[("g", "x")] == 1.0
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


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
        values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
