"""Pure parts of the request path, without sockets.

Matrix: balancer (exact weighted shares over 10,000 picks, weight 0, exclusion, interleaving,
sticky stability and share, movement when a target leaves); outlier detection (ejection after
N failures, doubling up to the maximum, reset by success, forgetting old ejections, injectable
clock); concurrency limiter (FIFO hand-over, bounded wait, cancellation); header policy
(hop-by-hop both ways, Connection-named headers, Authorization replaced, X-Forwarded-*);
usage extraction and SSE stripping (any chunking, CRLF events); histogram quantiles and
merging; redaction; candidate order (retries prefer a backend that did not fail, fallbacks in order,
ejected backends skipped unless every one is ejected).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from proxy_helpers import make_backend, make_config, make_route
from routeway_proxy.balancer import WeightedRoundRobin, pick_sticky
from routeway_proxy.headers import (
    build_upstream_headers,
    read_bearer_token,
    response_header_pairs,
)
from routeway_proxy.health import ConcurrencyLimiter, OutlierDetector
from routeway_proxy.metrics import ProxyMetrics
from routeway_proxy.pipeline.choose import CandidatePlan
from routeway_proxy.redact import REDACTED, redact_document
from routeway_proxy.stats import Buckets
from routeway_proxy.streaming import SSEUsageFilter, find_document_usage
from routeway_proxy.table import RoutingTable, build_routing_table

from routeway.proxyconfig import OutlierDetection

# --- balancer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [[90, 10], [1, 1, 1], [50, 30, 20], [97, 2, 1], [3, 0, 7]])
def test_round_robin_shares_are_exact(weights: list[int]) -> None:
    balancer = WeightedRoundRobin(weights)
    counts = Counter(balancer.pick() for _ in range(10_000))
    total = sum(weights)
    for i, weight in enumerate(weights):
        assert abs(counts[i] / 10_000 - weight / total) < 0.01
    assert counts[None] == 0


@settings(max_examples=80, deadline=None)
@given(weights=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6))
def test_round_robin_gives_each_target_exactly_its_weight_per_cycle(weights: list[int]) -> None:
    balancer = WeightedRoundRobin(weights)
    cycle = sum(weights)
    for _ in range(2):
        counts = Counter(balancer.pick() for _ in range(cycle))
        assert counts == Counter({i: w for i, w in enumerate(weights) if w > 0})


def test_round_robin_is_smooth_and_skips_weight_zero() -> None:
    balancer = WeightedRoundRobin([5, 1, 1, 0])
    picks = [balancer.pick() for _ in range(7)]
    assert Counter(picks) == {0: 5, 1: 1, 2: 1}
    assert picks[:2] != [0, 0] or picks[2] != 0  # interleaved, not a run of five


def test_round_robin_exclusion_and_nothing_left() -> None:
    balancer = WeightedRoundRobin([1, 1, 0])
    assert {balancer.pick({0}) for _ in range(5)} == {1}
    assert balancer.pick({0, 1}) is None
    assert WeightedRoundRobin([0, 0]).pick() is None


def test_sticky_keys_keep_their_target_and_follow_weights() -> None:
    ids = ("ns/a", "ns/b", "ns/c")
    weights = (60, 30, 10)
    chosen = {f"session-{i}": pick_sticky(f"session-{i}", ids, weights) for i in range(6000)}
    assert all(pick_sticky(k, ids, weights) == v for k, v in list(chosen.items())[:200])
    shares = Counter(chosen.values())
    assert abs(shares[0] / 6000 - 0.6) < 0.03 and abs(shares[2] / 6000 - 0.1) < 0.03
    # excluding b moves only b's sessions
    moved = [k for k, v in chosen.items() if pick_sticky(k, ids, weights, {1}) != v]
    assert all(chosen[k] == 1 for k in moved)
    assert pick_sticky("x", ids, (0, 0, 0)) is None


# --- outlier detection --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_outlier_detection_ejects_doubles_and_recovers() -> None:
    clock = Clock()
    health = OutlierDetector(OutlierDetection(consecutiveFailures=3, baseEjection=10, maxEjection=25), clock)
    assert [health.record_failure() for _ in range(3)] == [False, False, True]
    assert health.is_ejected() and health.ejection_remaining() == 10
    assert health.record_failure() is False  # failures while ejected do not extend it
    clock.now = 10
    assert not health.is_ejected()
    health.record_failure()
    health.record_success()  # resets the count
    health.record_failure()
    health.record_failure()
    assert health.record_failure() is True
    assert health.ejection_remaining() == 20  # doubled
    clock.now = 30
    for _ in range(3):
        health.record_failure()
    assert health.ejection_remaining() == 25  # capped at maxEjection
    clock.now = 55 + 25  # in service for maxEjection after the last ejection: doubling forgotten
    health.record_success()
    for _ in range(3):
        health.record_failure()
    assert health.ejection_remaining() == 10
    assert health.ejections == 4
    assert health.describe()["ejected"] is True


def test_outlier_detection_disabled_with_zero_threshold() -> None:
    health = OutlierDetector(OutlierDetection(consecutiveFailures=0, baseEjection=1, maxEjection=1), Clock())
    assert not any(health.record_failure() for _ in range(10))


# --- concurrency limiter ------------------------------------------------------------------------


async def test_limiter_hands_slots_over_in_order_and_bounds_the_wait() -> None:
    limiter = ConcurrencyLimiter(1)
    assert await limiter.acquire(0)
    assert not await limiter.acquire(0)  # no wait allowed
    order: list[str] = []

    async def wait(name: str) -> None:
        assert await limiter.acquire(5)
        order.append(name)

    first = asyncio.create_task(wait("first"))
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    limiter.release()
    await first
    limiter.release()
    await second
    assert order == ["first", "second"]
    assert not await limiter.acquire(0.01)  # bounded wait expires, nothing leaks
    limiter.release()
    assert limiter.in_use == 0
    cancelled = asyncio.create_task(limiter.acquire(5))
    assert await limiter.acquire(0)
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    limiter.release()
    assert limiter.in_use == 0 and limiter.waiting == 0


async def test_unlimited_limiter_counts_in_flight() -> None:
    limiter = ConcurrencyLimiter(None)
    assert await limiter.acquire(0) and await limiter.acquire(0)
    assert limiter.in_use == 2


# --- headers ------------------------------------------------------------------------------------


def test_upstream_headers_drop_hop_by_hop_and_client_authorization() -> None:
    client = CIMultiDict(
        {
            "Authorization": "Bearer client-key",
            "Connection": "keep-alive, X-Private",
            "X-Private": "drop me",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "x",
            "TE": "trailers",
            "Transfer-Encoding": "chunked",
            "Upgrade": "h2c",
            "Host": "gateway",
            "Content-Length": "10",
            "X-Forwarded-For": "10.0.0.1",
            "User-Agent": "sdk",
            "X-Session-Id": "abc",
        }
    )
    out = build_upstream_headers(
        client, authorization="Bearer backend", client_address="10.0.0.2", scheme="http"
    )
    assert out["Authorization"] == "Bearer backend"
    assert out["X-Forwarded-For"] == "10.0.0.1, 10.0.0.2"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["User-Agent"] == "sdk" and out["X-Session-Id"] == "abc"
    for dropped in (
        "Connection",
        "X-Private",
        "Keep-Alive",
        "Proxy-Authorization",
        "TE",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    ):
        assert dropped not in out
    bare = build_upstream_headers(
        {"authorization": "Bearer c"}, authorization=None, client_address=None, scheme="https"
    )
    assert "Authorization" not in bare and bare["X-Forwarded-Proto"] == "https"


def test_response_headers_drop_hop_by_hop_and_framing() -> None:
    upstream = CIMultiDict(
        {
            "Connection": "close, X-Hop",
            "X-Hop": "1",
            "Transfer-Encoding": "chunked",
            "Content-Length": "5",
            "Content-Encoding": "gzip",
            "Trailer": "x",
            "Server": "up",
            "Content-Type": "application/json",
            "X-Request-Id": "r1",
        }
    )
    out = CIMultiDict(response_header_pairs(upstream))
    assert dict(out) == {"Content-Type": "application/json", "X-Request-Id": "r1"}


def test_upstream_headers_join_repeated_forwarded_for_and_keep_client_proto() -> None:
    client = CIMultiDict(
        [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"), ("X-Forwarded-Proto", "https")]
    )
    out = build_upstream_headers(client, authorization=None, client_address="10.0.0.3", scheme="http")
    assert out.getall("X-Forwarded-For") == ["10.0.0.1, 10.0.0.2, 10.0.0.3"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    named = CIMultiDict(
        [
            ("Connection", "X-Forwarded-For, x-forwarded-proto"),
            ("X-Forwarded-For", "spoofed"),
            ("X-Forwarded-Proto", "https"),
        ]
    )
    out = build_upstream_headers(named, authorization=None, client_address="10.0.0.3", scheme="http")
    assert out.getall("X-Forwarded-For") == ["10.0.0.3"] and out.getall("X-Forwarded-Proto") == ["http"]


def test_an_upstreams_own_routeway_headers_give_way_to_the_gateways() -> None:
    upstream = CIMultiDict([("x-routeway-backend", "spoof"), ("X-Routeway-Route", "other"), ("X-Id", "1")])
    extra = (("x-routeway-route", "ns/r"), ("x-routeway-backend", "ns/b"))
    out = CIMultiDict(response_header_pairs(upstream, extra))
    assert out.getall("x-routeway-backend") == ["ns/b"] and out.getall("x-routeway-route") == ["ns/r"]
    assert out["X-Id"] == "1"


def test_response_header_pairs_append_gateway_headers_after_filtering() -> None:
    upstream = CIMultiDict(
        [("Content-Type", "application/json"), ("Connection", "keep-alive"), ("Date", "x")]
    )
    extra = (("x-routeway-route", "ns/r"), ("x-routeway-backend", "ns/b"))
    assert response_header_pairs(upstream, extra) == [("Content-Type", "application/json"), *extra]


def test_read_bearer_token() -> None:
    assert read_bearer_token("Bearer abc") == "abc"
    assert read_bearer_token("bearer  abc ") == "abc"
    assert read_bearer_token("Basic abc") is None
    assert read_bearer_token(None) is None
    assert read_bearer_token("Bearer ") is None


# --- usage and SSE ------------------------------------------------------------------------------


def test_document_usage_is_found_from_the_end() -> None:
    body = orjson.dumps(
        {
            "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
            "usage": {
                "prompt_tokens": 4,
                "completion_tokens": 6,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }
    )
    assert find_document_usage(body) == (4, 6)
    assert find_document_usage(b'{"data": [], "usage": {"prompt_tokens": 3, "total_tokens": 3}}') == (3, 0)
    assert find_document_usage(b'{"usage": null}') is None
    assert find_document_usage(b"not json") is None


def _events(include_usage: bool, crlf: bool = False) -> bytes:
    def event(document: dict[str, object]) -> bytes:
        return b"data: " + orjson.dumps(document) + (b"\r\n\r\n" if crlf else b"\n\n")

    usage = {"usage": None} if include_usage else {}
    body = b"".join(event({"choices": [{"delta": {"content": t}}], **usage}) for t in ["a", "b", "c"])
    if include_usage:
        body += event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    return body + (b"data: [DONE]\r\n\r\n" if crlf else b"data: [DONE]\n\n")


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
    strip=st.booleans(),
    crlf=st.booleans(),
)
def test_sse_filter_strips_only_the_usage_chunk_under_any_chunking(
    cuts: list[int], strip: bool, crlf: bool
) -> None:
    stream = _events(include_usage=True, crlf=crlf)
    positions = sorted({c for c in cuts if c < len(stream)})
    pieces = [stream[a:b] for a, b in zip([0, *positions], [*positions, len(stream)], strict=True)]
    sse = SSEUsageFilter(strip_usage_chunk=strip)
    out = b"".join(sse.feed(p) for p in pieces) + sse.flush()
    assert sse.usage == (7, 3)
    if strip:
        expected = stream.replace(
            b"data: "
            + orjson.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
            + (b"\r\n\r\n" if crlf else b"\n\n"),
            b"",
        )
        assert out == expected
    else:
        assert out == stream


def test_sse_filter_holds_partial_events_and_can_discard_them() -> None:
    sse = SSEUsageFilter(strip_usage_chunk=True)
    assert sse.feed(b'data: {"a"') == b""
    assert sse.feed(b": 1}\n\ndata: {") == b'data: {"a": 1}\n\n'
    sse.discard_pending()
    assert sse.flush() == b""


# --- statistics ---------------------------------------------------------------------------------


def test_bucket_quantiles_and_merge() -> None:
    a = Buckets((0.1, 0.5, 1.0, float("inf")), (50, 90, 100, 100), 20.0)
    assert a.quantile(0.5) == pytest.approx(0.1)
    assert a.quantile(0.95) == pytest.approx(0.75)
    merged = a.merge(Buckets((0.1, 0.5, 1.0, float("inf")), (0, 0, 0, 100), 500.0))
    assert merged.count == 200 and merged.total == 520
    assert merged.quantile(0.99) == 1.0  # falls in +Inf: the highest finite bound
    assert Buckets().quantile(0.5) is None
    with pytest.raises(ValueError):
        a.merge(Buckets((1.0, float("inf")), (1, 1), 1))


def test_redaction() -> None:
    document = {
        "url": "http://user:pw@host/v1",
        "credentialRef": "ns/s/k",
        "apiKey": "sk-1",
        "nested": [{"note": "token is hunter22"}],
    }
    out = redact_document(document, {"hunter22"})
    assert out["url"] == f"http://{REDACTED}@host/v1"
    assert out["credentialRef"] == "ns/s/k"
    assert out["apiKey"] == REDACTED
    assert out["nested"][0]["note"] == f"token is {REDACTED}"


# --- candidate order ----------------------------------------------------------------------------


def _route_table(clock: Clock, fallbacks: tuple[str, ...] = ("f1", "f2"), attempts: int = 1) -> RoutingTable:
    backends = [make_backend(n, f"http://127.0.0.1:9/{n}", failures=1) for n in ("a", "b", "f1", "f2")]
    config = make_config(
        backends, [make_route("gpt", [("a", 1), ("b", 1)], fallbacks=fallbacks, attempts=attempts)]
    )
    table, _ = build_routing_table(config, {}, {}, ProxyMetrics(CollectorRegistry()), clock)
    return table


def _order(table: RoutingTable) -> list[str]:
    plan = CandidatePlan(table.routes["gpt"], None)
    order = []
    while (target := plan.next()) is not None:
        order.append(target.backend.id.split("/")[1])
        plan.mark_failed(target)
    return order


def test_candidates_weighted_then_fallbacks_in_order() -> None:
    order = _order(_route_table(Clock()))
    assert sorted(order[:2]) == ["a", "b"]  # a retry prefers the backend that did not fail yet
    assert order[2:] == ["f1", "f2"]


def test_candidates_skip_ejected_backends_unless_all_are() -> None:
    clock = Clock()
    table = _route_table(clock)
    table.backends["ns/a"].health.record_failure()
    assert _order(table) == ["b", "b", "f1", "f2"]  # the retry goes to b again, not to ejected a
    table.backends["ns/b"].health.record_failure()
    assert _order(table) == ["f1", "f2"]  # every weighted target ejected: healthy fallbacks first
    table.backends["ns/f1"].health.record_failure()
    table.backends["ns/f2"].health.record_failure()
    assert sorted(_order(table)[:2]) == ["a", "b"]  # everything ejected: traffic still flows
    clock.now += 30
    assert sorted(_order(table)[:2]) == ["a", "b"]
