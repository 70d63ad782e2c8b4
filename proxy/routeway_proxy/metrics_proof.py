"""The start-up proof of the direct metric updates, and the choice it decides (`METRIC_VALUES`).

Split from routeway_proxy.metrics, whose request-path metrics it exercises on scratch
registries: the direct value updates (`metric_values.FastValues`) are used only when every
sample they leave reads back through prometheus-client's public API exactly as the public
API's own updates would have left it; otherwise the public API is the path, with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from routeway_proxy.fastpaths import Choice, fast_paths_refusal
from routeway_proxy.metric_values import (
    FAST_VALUES,
    PUBLIC_VALUES,
    HistogramValues,
    MetricValues,
    MmapValue,
    PlainValue,
    is_multiprocess,
    scratch_value_class,
)
from routeway_proxy.metrics import LATENCY_BUCKETS, TTFT_BUCKETS, PairMetrics, ProxyMetrics

PROOF_SECONDS = (0.0, 0.005, 0.0051, 0.3, 1.0, 299.0, 1e6, *LATENCY_BUCKETS, *TTFT_BUCKETS)
"""Observations of the start-up proof: every bucket bound, between bounds, beyond the last."""

_LONG_LABEL = "x" * 2000
"""A label value long enough that one pair's keys outgrow a fresh mmap file (64 KiB), so the
proof also writes after the library has grown the file and mapped it again."""

Samples = list[tuple[str, tuple[tuple[str, str], ...], float]]


def prove_fast_values(values: MetricValues = FAST_VALUES, multiprocess: bool | None = None) -> str | None:
    """None when `values` updates read back through prometheus-client's public API exactly as
    `Counter.inc`, `Gauge.inc` and `Histogram.observe` would have left them; otherwise what
    went wrong. `multiprocess`: None for this process's mode (`is_multiprocess()`).

    Runs the request path's updates on scratch metrics twice, once through `values` and once
    through the public API, and compares every sample read back (`registry.collect()`; in
    multiprocess mode `MultiProcessCollector` over the scratch files, as the supervisor reads
    the workers'). Never touches the process's own metrics (`scratch_value_class`). Also
    fails when `values` left a value object it does not update directly: the log line then
    would not say what runs.
    """
    if multiprocess is None:
        multiprocess = is_multiprocess()
    try:
        ours, engaged = _run_proof(values, multiprocess)
        theirs, _ = _run_proof(PUBLIC_VALUES, multiprocess)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if not engaged:
        return "it left a value object it does not know how to update directly"
    expected = (
        "routeway_requests_total",
        (("backend", "b"), ("client", ""), ("code", "200"), ("route", "proof")),
    )
    if not any(
        (name, labels) == expected and value == len(PROOF_SECONDS) + 1 for name, labels, value in theirs
    ):
        return "the public API's own values did not read back from the scratch metrics"
    if ours == theirs:
        return None
    differ = sorted(set(ours).symmetric_difference(theirs))
    name, labels, value = differ[0]
    side = "direct" if (name, labels, value) in ours else "public"
    shown = {key: text if len(text) <= 12 else text[:12] + "..." for key, text in labels}
    return f"{len(differ)} samples differ, e.g. {name}{shown} = {value} only through the {side} updates"


def _run_proof(values: MetricValues, multiprocess: bool) -> tuple[Samples, bool]:
    """(every sample read back, whether every value object was a direct one) after the request
    path's updates through `values` on scratch metrics."""
    with scratch_value_class(multiprocess) as directory:
        metrics = ProxyMetrics(CollectorRegistry(), values)
        pair = metrics.bind_pair("proof", "b")
        in_flight = values.adopt(metrics.in_flight.labels("proof"))
        in_flight.inc(1)
        for seconds in PROOF_SECONDS:
            pair.count_request(200, seconds)
            pair.ttft.observe(seconds)
        grown = metrics.bind_pair(_LONG_LABEL, _LONG_LABEL)  # multiprocess: files grow, remapped
        grown.count_request(200, 1.5)
        grown.count_tokens(1, 0)
        pair.count_request(503, 0.2)
        pair.count_tokens(7, 3)
        in_flight.inc(1)
        in_flight.inc(-1)
        again = metrics.bind_pair("proof", "b")  # a new routing table binds the same children
        again.count_request(200, 0.01)
        again.count_tokens(0, 2)
        pair.count_error("timeout")
        pair.count_retry("timeout")
        if directory is None:
            families: Iterable[Metric] = metrics.registry.collect()
        else:
            from prometheus_client import multiprocess as library_multiprocess

            registry = CollectorRegistry()
            library_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            families = registry.collect()
        samples = sorted(
            (sample.name, tuple(sorted(sample.labels.items())), sample.value)
            for family in families
            for sample in family.samples
            if not sample.name.endswith("_created")
        )
        direct = [in_flight, *_value_objects(pair), *_value_objects(grown)]
        engaged = all(isinstance(value, (PlainValue, MmapValue)) for value in direct)
        return samples, engaged


def _value_objects(pair: PairMetrics) -> list[Any]:
    objects = [pair.prompt_tokens, pair.completion_tokens, *getattr(pair, "_codes").values()]  # noqa: B009
    for histogram in (pair.duration, pair.ttft):
        if isinstance(histogram, HistogramValues):
            objects += [histogram.total, *histogram.buckets]
        else:
            objects.append(histogram)
    return objects


def _prometheus_client_release() -> str:
    from importlib import metadata

    try:
        return metadata.version("prometheus-client")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def choose_metric_values(
    environ: Mapping[str, str] = os.environ,
    prove: Callable[[], str | None] = prove_fast_values,
) -> Choice[MetricValues]:
    """The metric update path of this process and the line that says so (`METRIC_VALUES`)."""
    refusal = fast_paths_refusal(environ)
    if refusal is not None:
        return Choice(PUBLIC_VALUES, f"metrics: prometheus-client's public API ({refusal})")
    release = _prometheus_client_release()
    try:
        problem = prove()
    except Exception as exc:  # a proof that raises has failed, it must not stop the proxy
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        return Choice(
            PUBLIC_VALUES,
            f"metrics: prometheus-client's public API; direct value updates failed their start-up "
            f"proof on prometheus-client {release}: {problem}",
            failed=True,
        )
    mode = "multiprocess" if is_multiprocess() else "single-process"
    return Choice(
        FAST_VALUES,
        f"metrics: direct value updates ({mode}; start-up proof passed on prometheus-client {release})",
    )
