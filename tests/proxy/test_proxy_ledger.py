"""The request ledger: accounting applied in batches, yet exact whenever metrics are read."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from prometheus_client import CollectorRegistry
from proxy_helpers import CLIENT_LABELLED, Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.ledger import BATCH_LIMIT, DEFERRED_BODY_LIMIT, RequestLedger
from routeway_proxy.metrics import ProxyMetrics

USAGE_DOCUMENT = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}'


def value(metrics: ProxyMetrics, name: str, **labels: str) -> float | None:
    if name in CLIENT_LABELLED:
        labels.setdefault("client", "")  # requests of no ModelClient
    return metrics.registry.get_sample_value(name, labels)


def unflushed(metrics: ProxyMetrics, name: str, **labels: str) -> float:
    """The value as stored right now (a read from another thread: it does not flush)."""
    found: list[float | None] = []
    reader = threading.Thread(target=lambda: found.append(value(metrics, name, **labels)))
    reader.start()
    reader.join()
    return found[0] or 0.0


def test_without_an_event_loop_entries_apply_at_once() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    pair = metrics.bind_pair("r", "b")
    metrics.ledger.add(pair, 200, 0.01, USAGE_DOCUMENT)
    assert metrics.ledger.entries == []
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 1
    assert unflushed(metrics, "routeway_tokens_total", route="r", backend="b", type="completion") == 6


async def test_entries_wait_for_the_batch_and_a_read_on_the_loop_flushes_them() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    pair = metrics.bind_pair("r", "b")
    metrics.ledger.add(pair, 200, 0.01, USAGE_DOCUMENT)
    metrics.ledger.add(pair, 502, 0.02, None)
    metrics.ledger.add(pair, 200, 0.03, (1, 2))
    # not applied yet, and a read from another thread leaves the loop's entries alone
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 0
    assert len(metrics.ledger.entries) == 3
    # a read on the loop thread sees every request answered before it
    assert value(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 2
    assert value(metrics, "routeway_requests_total", route="r", backend="b", code="502") == 1
    assert value(metrics, "routeway_tokens_total", route="r", backend="b", type="prompt") == 5
    assert value(metrics, "routeway_tokens_total", route="r", backend="b", type="completion") == 8
    assert value(metrics, "routeway_request_duration_seconds_count", route="r", backend="b") == 3
    assert metrics.ledger.entries == []


async def test_a_batch_is_applied_by_its_timer_without_any_read() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    metrics.ledger = ledger = RequestLedger(delay=0.01)
    pair = metrics.bind_pair("r", "b")
    ledger.add(pair, 200, 0.01, USAGE_DOCUMENT)
    for _ in range(200):
        if not ledger.entries:
            break
        await asyncio.sleep(0.01)
    assert ledger.entries == []
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 1
    # the next batch arms a new timer
    ledger.add(pair, 200, 0.01, None)
    for _ in range(200):
        if not ledger.entries:
            break
        await asyncio.sleep(0.01)
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 2


async def test_flushing_twice_counts_once() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    pair = metrics.bind_pair("r", "b")
    metrics.ledger.add(pair, 200, 0.01, USAGE_DOCUMENT)
    metrics.ledger.flush()
    metrics.ledger.flush()
    assert value(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 1
    assert value(metrics, "routeway_tokens_total", route="r", backend="b", type="prompt") == 4


def test_a_batch_left_on_an_ended_loop_is_flushed_on_the_next() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    metrics.ledger.delay = 0.01
    pair = metrics.bind_pair("r", "b")

    async def answer_one() -> None:
        metrics.ledger.add(pair, 200, 0.01, None)

    asyncio.run(answer_one())  # the loop ends before its timer fires
    assert len(metrics.ledger.entries) == 1

    async def answer_another_and_wait() -> None:
        metrics.ledger.add(pair, 200, 0.01, None)
        for _ in range(200):
            if not metrics.ledger.entries:
                return
            await asyncio.sleep(0.01)

    asyncio.run(answer_another_and_wait())
    assert metrics.ledger.entries == []
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 2


async def test_a_full_batch_is_applied_at_once() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    metrics.ledger.delay = 3600
    pair = metrics.bind_pair("r", "b")
    for _ in range(BATCH_LIMIT):
        metrics.ledger.add(pair, 200, 0.01, None)
    assert metrics.ledger.entries == []
    assert unflushed(metrics, "routeway_requests_total", route="r", backend="b", code="200") == BATCH_LIMIT


async def test_one_failing_entry_costs_only_itself() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    good = metrics.bind_pair("r", "b")

    class Broken:
        def count_request(self, code: int, seconds: float) -> None:
            raise ValueError("a bug")

    metrics.ledger.add(good, 200, 0.01, None)
    metrics.ledger.add(Broken(), 200, 0.01, None)  # type: ignore[arg-type]
    metrics.ledger.add(good, 200, 0.01, None)
    assert value(metrics, "routeway_requests_total", route="r", backend="b", code="200") == 2


async def test_an_answer_too_large_to_hold_is_still_counted(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.metrics.ledger.delay = 3600  # only a read flushes: the check below sees the batch
    gateway.runtime.apply(
        make_config([make_backend("b1", upstream.base("large"))], [make_route("gpt", [("b1", 1)])]), {}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.url + "/v1/chat/completions", json={"model": "gpt", "messages": []}) as response,
    ):
        body = await response.read()
    assert response.status == 200 and len(body) > DEFERRED_BODY_LIMIT
    assert not any(isinstance(entry[3], bytes) for entry in gateway.runtime.metrics.ledger.entries)
    metrics = gateway.runtime.metrics
    assert value(metrics, "routeway_tokens_total", route="ns/gpt", backend="ns/b1", type="prompt") == 5
    assert value(metrics, "routeway_requests_total", route="ns/gpt", backend="ns/b1", code="200") == 1
