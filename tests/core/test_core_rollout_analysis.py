"""Analysis: quantiles from buckets, the verdict on one window, and how windows are made.

Matrix: `histogram_quantile` on hand-computed cases (interpolation, the lowest bucket from 0,
overflow capped at the highest bound, empty) and, for arbitrary histograms, agreement with the
proxy's own `/routes` quantiles; `judge` per metric (max, equal passes, ratio to stable, stable
without data, stable at 0, canary without data, both limits) and overall (fail beats
inconclusive beats pass, too few canary requests is inconclusive however bad); client errors
(400/413/422) neither errors nor requests, upstream rejections (401/403/404/408/429) both;
windows as differences of cumulative reports merged over instances (a baseline before the
window, a counter reset, a restart under the same id, an instance born inside the window, a
revision new since the baseline, samples after the window ignored, histogram layouts that
differ); the report document round-trips.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from core_rollout import LATENCY_BOUNDS, histogram, obs
from hypothesis import given
from hypothesis import strategies as st
from routeway_proxy.stats import Buckets

from routeway.rollout import ArmObservation, Histogram, Report, Sample, judge, window_observations
from routeway.rollout.observations import arm_pair, report_from_json, report_to_json
from routeway.rollout.strategy import Analysis, MetricCheck

H = Histogram((1.0, 2.0, 4.0), (10, 10, 20, 0))  # 40 observations


@pytest.mark.parametrize(
    ("histogram_", "q", "expected"),
    [
        (H, 0.25, 1.0),  # rank 10: the top of the first bucket
        (H, 0.125, 0.5),  # rank 5: halfway through (0, 1]
        (H, 0.5, 2.0),  # rank 20: the top of (1, 2]
        (H, 0.95, 3.8),  # rank 38: 2 + 2 * 18/20
        (Histogram((1.0, 2.0, 4.0), (0, 0, 0, 5)), 0.5, 4.0),  # overflow: the highest finite bound
        (Histogram((1.0, 2.0, 4.0), (0, 4, 0, 0)), 0.5, 1.5),  # empty buckets below are skipped
        (Histogram((1.0, 2.0), (0, 0, 0)), 0.5, None),
        (Histogram(), 0.95, None),
    ],
)
def test_quantiles_from_buckets(histogram_: Histogram, q: float, expected: float | None) -> None:
    assert histogram_.quantile(q) == (pytest.approx(expected) if expected is not None else None)


@given(st.lists(st.integers(0, 50), min_size=4, max_size=4), st.sampled_from([0.5, 0.95, 0.99]))
def test_quantiles_agree_with_what_the_proxy_shows(counts: list[int], q: float) -> None:
    bounds = (0.5, 1.0, 5.0)
    ours = Histogram(bounds, tuple(counts))
    cumulative = tuple(float(c) for c in itertools.accumulate(counts))
    theirs = Buckets((*bounds, float("inf")), cumulative)
    expected = theirs.quantile(q)
    assert ours.quantile(q) == (pytest.approx(expected) if expected is not None else None)


ERR = MetricCheck("errorRate", max=0.02)
P95 = MetricCheck("latencyP95", max=2.0)
TTFT_RATIO = MetricCheck("ttftP95", max_ratio_to_stable=1.3)
BOTH = MetricCheck("latencyP50", max=1.0, max_ratio_to_stable=2.0)
ANALYSIS = Analysis(30.0, 300.0, (ERR,), min_requests=100)


@pytest.mark.parametrize(
    ("case", "check", "stable", "canary", "verdict"),
    [
        ("errors under max", ERR, obs(1000), obs(1000, errors=10), "pass"),
        ("errors at max pass", ERR, obs(1000), obs(1000, errors=20), "pass"),
        ("errors over max", ERR, obs(1000), obs(1000, errors=21), "fail"),
        ("client 4xx are not errors", ERR, obs(1000), obs(1000, client=900), "pass"),
        ("latency under max", P95, obs(1000), obs(1000, latency=1.5), "pass"),
        ("latency over max", P95, obs(1000), obs(1000, latency=4.0), "fail"),
        ("canary without latencies", P95, obs(1000), obs(1000, errors=1000), "inconclusive"),
        ("ratio within", TTFT_RATIO, obs(1000, ttft=1.5), obs(1000, ttft=1.5), "pass"),
        ("ratio beyond", TTFT_RATIO, obs(1000, ttft=0.3), obs(1000, ttft=1.5), "fail"),
        ("ratio: stable without data", TTFT_RATIO, ArmObservation(), obs(1000, ttft=1.5), "inconclusive"),
        (
            "ratio: stable at 0, canary 0",
            MetricCheck("errorRate", max_ratio_to_stable=2.0),
            obs(500),
            obs(500),
            "pass",
        ),
        (
            "ratio: stable at 0, canary not",
            MetricCheck("errorRate", max_ratio_to_stable=2.0),
            obs(500),
            obs(500, 1),
            "fail",
        ),
        ("both limits: max fails", BOTH, obs(1000, latency=0.8), obs(1000, latency=1.5), "fail"),
        ("both limits: ratio fails", BOTH, obs(1000, latency=0.05), obs(1000, latency=0.3), "fail"),
        ("both limits: ratio unknown", BOTH, ArmObservation(), obs(1000, latency=0.3), "inconclusive"),
        ("both limits pass", BOTH, obs(1000, latency=0.3), obs(1000, latency=0.3), "pass"),
    ],
)
def test_one_metric(
    case: str, check: MetricCheck, stable: ArmObservation, canary: ArmObservation, verdict: str
) -> None:
    judgement = judge((check,), stable, canary, ANALYSIS)
    assert judgement.metrics[0].verdict == verdict, case
    assert judgement.verdict == verdict, case


def test_each_metric_reports_both_arms_values() -> None:
    checks = (ERR, P95, TTFT_RATIO, MetricCheck("latencyP50", max=9.0), MetricCheck("ttftP50", max=9.0))
    judgement = judge(checks, obs(1000, errors=10, latency=0.3, ttft=0.05), obs(1000, errors=50), ANALYSIS)
    values = {m.metric: (m.stable, m.canary, m.verdict) for m in judgement.metrics}
    assert values["errorRate"] == pytest.approx((0.01, 0.05, "fail"))
    # 990 observations all in (0.1, 0.5]: p95 = 0.1 + 0.4 * 0.95
    assert values["latencyP95"] == pytest.approx((0.48, 0.48, "pass"))
    assert values["ttftP95"][0] == pytest.approx(0.095)  # all in (0, 0.1]
    assert values["ttftP95"][2] == "fail"
    assert judgement.verdict == "fail"
    assert "errorRate 0.05" in judgement.summary() and "1000 canary / 1000 stable" in judgement.summary()


def test_overall_fail_beats_inconclusive_beats_pass() -> None:
    stable_less = ArmObservation()
    canary = obs(1000, errors=100, latency=0.3)
    assert judge((ERR, TTFT_RATIO), stable_less, canary, ANALYSIS).verdict == "fail"
    assert judge((P95, TTFT_RATIO), stable_less, canary, ANALYSIS).verdict == "inconclusive"
    assert judge((P95,), stable_less, canary, ANALYSIS).verdict == "pass"


def test_too_few_canary_requests_is_inconclusive_however_bad() -> None:
    judgement = judge((ERR,), obs(1000), obs(99, errors=99), ANALYSIS)
    assert judgement.verdict == "inconclusive"
    assert judgement.metrics[0].verdict == "inconclusive"
    assert judgement.metrics[0].canary == 1.0  # the numbers are still shown
    assert "fewer than minRequests 100" in judgement.summary()
    # 4xx do not make up the count
    assert judge((ERR,), obs(1000), obs(50, client=500), ANALYSIS).verdict == "inconclusive"
    assert judge((ERR,), obs(0), obs(100), ANALYSIS).verdict == "pass"


def test_upstream_rejections_are_the_canarys_errors_client_errors_are_not() -> None:
    """A canary with a wrong model name or a bad credential gets a 404/401/403 on every attempt:
    that is a failing canary, not one without traffic. A 400/422 is the request's own fault."""
    rejecting = obs(500, rejected=500)
    assert (rejecting.requests, rejecting.failures, rejecting.error_rate) == (500, 500, 1.0)
    judgement = judge((ERR,), obs(1000), rejecting, ANALYSIS)
    assert judgement.verdict == "fail" and "errorRate 1" in judgement.summary()
    mixed = obs(1000, errors=5, rejected=15, client=300)
    assert (mixed.requests, mixed.failures) == (1000, 20)
    assert mixed.error_rate == pytest.approx(0.02)
    assert judge((ERR,), obs(1000), mixed, ANALYSIS).verdict == "pass"  # equal to max passes


# ---------------------------------------------------------------------------- windows

KEY_S = ("default/chat", "stable-rev")
KEY_C = ("default/chat", "canary-rev")


def report(instance: str, started: float, **arms: ArmObservation) -> Report:
    keys = {"stable": KEY_S, "canary": KEY_C}
    return Report(instance, started, {keys[name]: o for name, o in arms.items()})


def test_a_window_is_the_increase_since_the_baseline_merged_over_instances() -> None:
    samples = [
        Sample(0.0, report("pod-1", -1000.0, stable=obs(5000, errors=5))),
        Sample(100.0, report("pod-1", -1000.0, stable=obs(5100, errors=6))),
        Sample(400.0, report("pod-1", -1000.0, stable=obs(5600, errors=6), canary=obs(60, errors=3))),
        Sample(100.0, report("pod-2", -500.0, stable=obs(300))),
        Sample(400.0, report("pod-2", -500.0, stable=obs(700), canary=obs(40, errors=1))),
        Sample(500.0, report("pod-2", -500.0, stable=obs(99999), canary=obs(99999))),  # after the window
    ]
    window = window_observations(samples, start=100.0, end=400.0)
    stable, canary = arm_pair(window, "default/chat", "stable-rev", "canary-rev")
    assert (stable.requests, stable.failures) == (500 + 400, 0)
    assert (canary.requests, canary.failures) == (100, 4)  # new since the baseline: counted from zero
    assert canary.latency.total == 96


def test_a_counter_reset_counts_everything_after_it() -> None:
    samples = [
        Sample(0.0, report("pod-1", -10.0, canary=obs(500))),
        Sample(60.0, report("pod-1", -10.0, canary=obs(30, errors=3))),  # restarted under the same name
    ]
    canary = window_observations(samples, 0.0, 60.0)[KEY_C]
    assert (canary.requests, canary.failures) == (30, 3)


def test_a_restart_under_the_same_instance_id_starts_from_zero() -> None:
    """Its new counters grew past the old ones, so no counter went down: only `startedAt` tells."""
    inside = [
        Sample(0.0, report("pod-1", -10.0, canary=obs(500))),
        Sample(60.0, report("pod-1", 30.0, canary=obs(600, errors=6))),  # restarted at 30
    ]
    canary = window_observations(inside, 0.0, 60.0)[KEY_C]
    assert (canary.requests, canary.failures) == (600, 6)
    before = [  # restarted before the window: its own oldest read is the baseline, not the old run
        Sample(0.0, report("pod-1", -100.0, canary=obs(500))),
        Sample(120.0, report("pod-1", 50.0, canary=obs(700))),
        Sample(200.0, report("pod-1", 50.0, canary=obs(900))),
    ]
    assert window_observations(before, 100.0, 200.0)[KEY_C].requests == 200


def test_instances_without_a_baseline() -> None:
    born_inside = [Sample(90.0, report("pod-new", 50.0, canary=obs(120)))]
    assert window_observations(born_inside, 0.0, 100.0)[KEY_C].requests == 120
    # older than the window but first read inside it: its oldest read is the baseline
    first_read_late = [
        Sample(50.0, report("pod-old", -9999.0, canary=obs(10_000))),
        Sample(100.0, report("pod-old", -9999.0, canary=obs(10_200))),
    ]
    assert window_observations(first_read_late, 0.0, 100.0)[KEY_C].requests == 200


def test_histograms_with_different_bounds_do_not_merge() -> None:
    with pytest.raises(ValueError, match="bounds"):
        histogram(1.0, bounds=(1.0,)).merge(histogram(1.0, bounds=(2.0,)))
    with pytest.raises(ValueError, match="increase"):
        Histogram((2.0, 1.0), (0, 0, 0))


def test_instances_with_another_histogram_layout_are_left_out_of_the_histogram_only() -> None:
    """During a proxy upgrade instances report different bucket layouts: analysis goes on."""
    other = (0.25, 1.0, 5.0)
    samples = [
        Sample(10.0, report("pod-a", 0.0, canary=obs(100))),
        Sample(
            10.0,
            report("pod-b", 0.0, canary=replace(obs(50, errors=5), latency=histogram(0.3, bounds=other))),
        ),
        Sample(10.0, report("pod-c", 0.0, canary=obs(30))),
    ]
    canary = window_observations(samples, 0.0, 10.0)[KEY_C]
    assert (canary.requests, canary.failures) == (180, 5)  # every instance's outcomes count
    assert canary.latency.bounds == LATENCY_BOUNDS and canary.latency.total == 130  # pod-b's left out
    assert canary.ttft.total == 175  # its ttft has the common layout: kept


def test_a_histogram_layout_change_within_one_instance_is_a_reset() -> None:
    samples = [
        Sample(0.0, report("pod-1", -10.0, canary=obs(500))),
        Sample(60.0, report("pod-1", -10.0, canary=replace(obs(600), latency=histogram(0.3, bounds=(1.0,))))),
    ]
    canary = window_observations(samples, 0.0, 60.0)[KEY_C]
    assert canary.requests == 600 and canary.latency.total == 1  # all of the newest, consistently


def test_the_report_document_round_trips() -> None:
    original = report("pod-1", 1700000000.0, stable=obs(10, errors=1, client=2, rejected=3), canary=obs(5))
    document = report_to_json(original, {KEY_C: "canary"})
    assert document["arms"][0]["arm"] == "canary"
    assert document["arms"][1]["outcomes"]["upstreamRejected"] == 3
    assert report_from_json(document) == original
    older = {**document, "arms": [{**a, "outcomes": {"success": 4}} for a in document["arms"]]}
    assert report_from_json(older).arms[KEY_S].upstream_rejected == 0  # a proxy without the field
    with pytest.raises(ValueError, match="schema"):
        report_from_json({**document, "schema": 2})
    with pytest.raises(ValueError, match="malformed"):
        report_from_json({"schema": 1, "arms": []})
