"""How the request path updates metric values: directly (`FastValues`) or through the API.

Why a fast path: `Counter.inc` is five Python calls (observability check, value object, lock
enter and exit) and a request makes seven updates; in multiprocess mode each also takes a
process-wide lock, calls `os.getpid()` and goes through two helper functions. `FastValues`
binds the value objects behind each label child once per config and updates those.

Why it is guarded: it works on prometheus-client's private parts — the `_value`, `_sum`,
`_buckets` and `_upper_bounds` of a child, `MutexValue`, and the mmap slot layout of
`MmapedValue` — which any release may change, and a changed mmap layout would corrupt a
neighbouring value silently. So nothing private is imported at module load, every private
name is looked up defensively, and `metrics_proof.prove_fast_values` checks at start-up that values
written this way read back through the public API exactly as `PublicValues` writes them
(`metrics.METRIC_VALUES`, the seam). `PublicValues` is the always-working alternative:
`Counter.inc`, `Gauge.inc`/`set`, `Histogram.observe` on the label children.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import Histogram

__all__ = [
    "FAST_VALUES",
    "PUBLIC_VALUES",
    "FastValues",
    "HistogramValues",
    "MetricValues",
    "MmapValue",
    "PlainValue",
    "PublicValues",
    "scratch_value_class",
]


class MetricValues:
    """Binds the objects the hot path updates for a metric child: something with `inc(amount)`
    for a counter or gauge child (`adopt`), something with `observe(amount)` for a histogram
    child (`histogram`)."""

    name = ""

    def adopt(self, holder: Any, attribute: str = "_value") -> Any:
        raise NotImplementedError

    def histogram(self, child: Histogram) -> Any:
        raise NotImplementedError


class PublicValues(MetricValues):
    """prometheus-client's public API: the label child itself is what the hot path updates."""

    name = "public"

    def adopt(self, holder: Any, attribute: str = "_value") -> Any:
        if attribute != "_value":
            raise ValueError(f"the public API has no value object for {attribute}")
        return holder

    def histogram(self, child: Histogram) -> Histogram:
        return child


class PlainValue:
    """A single-process metric value without a lock: the hot path adds to `value` directly.

    In one process every update happens on the event loop thread and a scrape (in the
    executor) only reads the float, which is atomic under the GIL, so no lock is needed and
    `/metrics` stays exact. It replaces prometheus-client's `MutexValue` inside the bound
    children (`FastValues.adopt`), so collection reads it as its own.
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
    """Whether `value` is prometheus-client's MmapedValue with the internals `MmapValue` uses
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


def _mutex_value_class() -> type | None:
    """prometheus-client's single-process value class, if it is still where it was."""
    try:
        from prometheus_client import values
    except ImportError:
        return None
    found = getattr(values, "MutexValue", None)
    return found if isinstance(found, type) else None


class FastValues(MetricValues):
    """Direct updates of prometheus-client's value objects (see `PlainValue`, `MmapValue`).

    A value of a shape it does not know is left as it is (its own `inc`): the start-up proof
    then sees the fast path did not engage and the seam chooses `PublicValues`.
    """

    name = "fast"

    def __init__(self) -> None:
        self._mutex_class: Any = _mutex_value_class()

    def make(self, value: Any) -> Any:
        """The object the hot path updates for one value object."""
        if self._mutex_class is not None and type(value) is self._mutex_class:
            return PlainValue(value.get())
        if _is_mmap_value(value):
            return MmapValue(value)
        return value

    def adopt(self, holder: Any, attribute: str = "_value") -> Any:
        """In single-process mode the holder's `MutexValue` is swapped for a `PlainValue`
        (keeping what it counted so far); children are shared between routing tables, so a
        value already adopted is returned as it is. In multiprocess mode an `MmapValue`
        writing to the child's own slot."""
        value = getattr(holder, attribute)
        fast = self.make(value)
        if type(fast) is PlainValue and fast is not value:
            setattr(holder, attribute, fast)
        return fast

    def histogram(self, child: Histogram) -> HistogramValues:
        return HistogramValues(child, self)


class HistogramValues:
    """The sum and bucket values of one histogram child, updated without `observe()`."""

    __slots__ = ("bounds", "buckets", "plain", "total")

    def __init__(self, child: Histogram, values: FastValues) -> None:
        self.total = values.adopt(child, "_sum")
        buckets: list[Any] = getattr(child, "_buckets")  # noqa: B009  (private: no public accessor)
        fast = [values.make(value) for value in buckets]
        for i, value in enumerate(fast):
            if type(value) is PlainValue:
                buckets[i] = value  # collection reads the child's list
        self.buckets = tuple(fast)
        self.bounds: tuple[float, ...] = tuple(getattr(child, "_upper_bounds"))  # noqa: B009
        if len(self.bounds) != len(self.buckets):
            raise ValueError(f"{len(self.bounds)} bucket bounds for {len(self.buckets)} buckets")
        self.plain = type(self.total) is PlainValue and all(type(b) is PlainValue for b in fast)

    def observe(self, amount: float) -> None:
        """`Histogram.observe` for finite amounts: the first bucket whose bound is >= amount."""
        bucket = self.buckets[bisect_left(self.bounds, amount)]
        if self.plain:
            self.total.value += amount
            bucket.value += 1
        else:
            self.total.inc(amount)
            bucket.inc(1)


FAST_VALUES = FastValues()
PUBLIC_VALUES = PublicValues()


def is_multiprocess() -> bool:
    """Whether this process's metrics are written to mmap files (PROMETHEUS_MULTIPROC_DIR was
    set when prometheus-client was imported)."""
    from prometheus_client import values

    return bool(getattr(getattr(values, "ValueClass", None), "_multiprocess", False))


@contextlib.contextmanager
def scratch_value_class(multiprocess: bool) -> Iterator[str | None]:
    """Metric children created inside write to scratch storage, never to the process's own
    files: for the start-up proof. Yields the scratch directory in multiprocess mode (read it
    back with `MultiProcessCollector(registry, path=...)`), None in single-process mode, where
    children of a scratch registry already hold their own values.

    Multiprocess mode: prometheus-client picks the value class at import and its directory
    from the environment when a value's file is first opened, and offers no other way in; so
    for the duration of the block `values.ValueClass` is a fresh `MultiProcessValue` class and
    PROMETHEUS_MULTIPROC_DIR a temporary directory, both restored after. Meant for start-up,
    when no other thread creates metrics. Raises RuntimeError when the library no longer
    looks its value class up where this replaces it.
    """
    if not multiprocess:
        yield None
        return
    import prometheus_client.metrics as library_metrics
    from prometheus_client import values

    if getattr(library_metrics, "values", None) is not values or hasattr(library_metrics, "ValueClass"):
        raise RuntimeError("prometheus_client.metrics no longer reads values.ValueClass")
    variable = "PROMETHEUS_MULTIPROC_DIR"
    with tempfile.TemporaryDirectory(prefix="routeway-metrics-proof-") as scratch:
        scratch_class = values.MultiProcessValue(lambda: "proof")  # type: ignore[no-untyped-call]
        saved_class, saved_dir = values.ValueClass, os.environ.get(variable)
        values.ValueClass = scratch_class
        os.environ[variable] = scratch
        try:
            yield scratch
        finally:
            values.ValueClass = saved_class
            if saved_dir is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = saved_dir
            close = getattr(scratch_class, "close_all_files", None)  # not in every release
            if close is not None:
                close()
