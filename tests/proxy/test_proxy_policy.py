"""The attempt policy (routeway_proxy.pipeline.policy), driven by tables of events, no I/O.

Each scenario is a route and the outcome of each attempt in order; the policy's answers give
the sequence of backends tried, the backoff before each retry and the final answer
(`ok`, `answer:<status>` for the upstream's own answer relayed, `error:<status>` for one the
gateway makes). Time advances one second per attempt plus the backoffs, so route timeouts
are part of the table. Jitter is fixed at its maximum (backoff = the exponential step).

Matrix: success; each failure reason (connect-failure, timeout, idle-timeout, total-timeout,
disconnect, overloaded, 429, 5xx) with and without its retryOn value; retries then fallbacks;
a retry avoiding the backend that failed; exponential backoff; the route timeout before an
attempt and across a backoff; every candidate ejected (503 + Retry-After); no candidate at all;
Retry-After (`-ra` outcomes: on a 429 or 503 the driver puts the backend on hold, as
pipeline/failures.py does): never the same backend again (a 502's too, without a hold),
another weighted one or a fallback instead, the
upstream's answer when nothing else can serve, a held backend skipped by the next request,
every candidate held (the held status with the time left), a Retry-After of 0 holding nothing.
`parse_retry_after` has its own table: both forms, fractions, the past, garbage, absurd values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from proxy_helpers import make_backend, make_config, make_route
from routeway_proxy.errors import (
    make_overloaded,
    make_upstream_failed,
    make_upstream_timeout,
    make_upstream_unreachable,
)
from routeway_proxy.metrics import ProxyMetrics
from routeway_proxy.pipeline.failures import HOLDING_STATUSES
from routeway_proxy.pipeline.policy import (
    OVERLOADED,
    AttemptPolicy,
    Failure,
    GiveUp,
    Retry,
    parse_retry_after,
)
from routeway_proxy.table import RouteEntry, RoutingTable, build_routing_table

DEFAULT_RETRY_ON = ("connect-failure", "5xx", "429")


def failure(outcome: str) -> Failure:
    """The `Failure` the driver (pipeline/attempts.py, relay.py) builds for each outcome."""
    if outcome == "connect-failure":
        return Failure(outcome, outcome, make_upstream_unreachable("no connection"))
    if outcome == "timeout":
        return Failure(outcome, outcome, make_upstream_timeout("no first byte"))
    if outcome == "idle-timeout":  # before anything reached the client (after: never a Failure)
        return Failure(outcome, "timeout", make_upstream_timeout(outcome))
    if outcome == "total-timeout":
        return Failure(outcome, None, make_upstream_timeout(outcome))
    if outcome == "disconnect":  # before anything reached the client
        return Failure(outcome, "5xx", make_upstream_unreachable("dropped"))
    if outcome == "overloaded":
        return Failure(outcome, OVERLOADED, make_overloaded("no slot"))
    if outcome == "429":
        return Failure("429", "429", make_upstream_failed(429, "limited"), answer=Answer(429))
    if outcome == "5xx":
        return Failure("5xx", "5xx", make_upstream_failed(503, "unavailable"), answer=Answer(503))
    if outcome.startswith(("429-ra", "5xx-ra", "502-ra")):  # e.g. 429-ra7: Retry-After: 7
        code, _, after = outcome.partition("-ra")
        status = {"429": 429, "5xx": 503, "502": 502}[code]
        seconds = float(after)
        reason = "429" if status == 429 else "5xx"
        error = make_upstream_failed(status, "come back later")
        return Failure(reason, reason, error, answer=Answer(status), retry_after=seconds)
    raise AssertionError(outcome)


@dataclass(frozen=True)
class Answer:
    """Stands for the upstream's own HTTP answer (opaque to the policy)."""

    status: int


@dataclass
class Scenario:
    targets: list[tuple[str, int]]
    outcomes: list[str]
    tried: list[str]
    final: str
    fallbacks: tuple[str, ...] = ()
    attempts: int = 1
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    timeout: float | None = None
    ejected: tuple[str, ...] = ()
    held: tuple[str, ...] = ()  # on hold (a 429's Retry-After) before the request
    backoffs: list[float] | None = None
    names: list[str] = field(default_factory=list)


SCENARIOS = {
    "success at once": Scenario([("a", 1)], ["ok"], ["a"], "ok"),
    "connect failure retried": Scenario(
        [("a", 1)], ["connect-failure", "ok"], ["a", "a"], "ok", backoffs=[0.05]
    ),
    "connect failure not in retryOn": Scenario(
        [("a", 1)], ["connect-failure"], ["a"], "error:502", retry_on=("5xx",)
    ),
    "retries then fallbacks in order": Scenario(
        [("a", 1)],
        ["connect-failure", "connect-failure", "connect-failure", "ok"],
        ["a", "a", "f1", "f2"],
        "ok",
        fallbacks=("f1", "f2"),
    ),
    "every candidate failed: the last failure": Scenario(
        [("a", 1)], ["connect-failure", "5xx"], ["a", "a"], "answer:503"
    ),
    "a retry avoids the backend that failed": Scenario(
        [("a", 3), ("b", 1)], ["connect-failure", "ok"], ["a", "b"], "ok"
    ),
    "429 retried": Scenario([("a", 1)], ["429", "ok"], ["a", "a"], "ok"),
    "429 not in retryOn: its answer is relayed": Scenario(
        [("a", 1)], ["429"], ["a"], "answer:429", retry_on=("5xx",)
    ),
    "5xx retried on a fallback": Scenario(
        [("a", 1)], ["5xx", "ok"], ["a", "f1"], "ok", attempts=0, fallbacks=("f1",)
    ),
    "first-byte timeout not retried by default": Scenario([("a", 1)], ["timeout"], ["a"], "error:504"),
    "first-byte timeout retried with timeout in retryOn": Scenario(
        [("a", 1)], ["timeout", "ok"], ["a", "a"], "ok", retry_on=("timeout",)
    ),
    "a stall before anything reached the client: retried with timeout in retryOn": Scenario(
        [("a", 1)],
        ["idle-timeout", "ok"],
        ["a", "f1"],
        "ok",
        attempts=0,
        fallbacks=("f1",),
        retry_on=("timeout", "5xx"),
    ),
    "a stall before anything reached the client: not retried by default": Scenario(
        [("a", 1)], ["idle-timeout"], ["a"], "error:504", fallbacks=("f1",)
    ),
    "total timeout never retried": Scenario(
        [("a", 1)], ["total-timeout"], ["a"], "error:504", fallbacks=("f1",)
    ),
    "a drop before anything reached the client: retried as 5xx": Scenario(
        [("a", 1)], ["disconnect", "ok"], ["a", "f1"], "ok", attempts=0, fallbacks=("f1",)
    ),
    "a drop before anything reached the client: not retried without 5xx": Scenario(
        [("a", 1)], ["disconnect"], ["a"], "error:502", fallbacks=("f1",), retry_on=("connect-failure",)
    ),
    "429 with Retry-After: not the same backend again, the fallback": Scenario(
        [("a", 1)], ["429-ra7", "ok"], ["a", "f1"], "ok", attempts=1, fallbacks=("f1",)
    ),
    "503 with Retry-After: another weighted backend": Scenario(
        [("a", 1), ("b", 1)], ["5xx-ra7", "ok"], ["a", "b"], "ok", attempts=1
    ),
    "429 with Retry-After and nothing else to try: its answer": Scenario(
        [("a", 1)], ["429-ra7"], ["a"], "answer:429", attempts=3
    ),
    "429 with Retry-After, then the fallback's own Retry-After": Scenario(
        [("a", 1)], ["429-ra7", "5xx-ra3"], ["a", "f1"], "answer:503", attempts=2, fallbacks=("f1",)
    ),
    "502 with Retry-After (no hold): still not the same backend again": Scenario(
        [("a", 1)], ["502-ra7"], ["a"], "answer:502", attempts=2
    ),
    "Retry-After 0 holds nothing: the same backend again": Scenario(
        [("a", 1)], ["429-ra0", "ok"], ["a", "a"], "ok", attempts=1
    ),
    "a held backend is skipped by the next request": Scenario(
        [("a", 1), ("b", 1)], ["ok"], ["b"], "ok", held=("a",)
    ),
    "a held backend is skipped even when every weighted one is out": Scenario(
        [("a", 1)], ["ok"], ["f1"], "ok", held=("a",), fallbacks=("f1",)
    ),
    "every candidate held: the held status, nothing tried": Scenario(
        [("a", 1)], [], [], "error:429", held=("a", "f1"), fallbacks=("f1",)
    ),
    "overloaded: next candidate at once, whatever retryOn says": Scenario(
        [("a", 1)],
        ["overloaded", "ok"],
        ["a", "f1"],
        "ok",
        attempts=0,
        fallbacks=("f1",),
        retry_on=(),
        backoffs=[0.0],
    ),
    "overloaded everywhere": Scenario([("a", 1)], ["overloaded", "overloaded"], ["a", "a"], "error:503"),
    "backoff doubles up to its cap": Scenario(
        [("a", 1)],
        ["connect-failure"] * 3 + ["ok"],
        ["a"] * 4,
        "ok",
        attempts=3,
        backoffs=[0.05, 0.1, 0.15],
    ),
    "route timeout before the next attempt": Scenario(
        [("a", 1)], ["connect-failure", "connect-failure"], ["a", "a"], "error:504", attempts=3, timeout=1.5
    ),
    "route timeout within a backoff": Scenario(
        [("a", 1)], ["connect-failure"], ["a"], "error:504", attempts=3, timeout=1.02
    ),
    "every candidate ejected: 503, the model is down": Scenario(
        [("a", 1)],
        ["connect-failure", "connect-failure"],
        ["a", "f1"],
        "error:503",
        ejected=("a", "f1"),
        fallbacks=("f1",),
        attempts=0,
    ),
    "ejected weighted targets: a healthy fallback first": Scenario(
        [("a", 1), ("b", 1)], ["ok"], ["f1"], "ok", ejected=("a", "b"), fallbacks=("f1",)
    ),
    "no weighted target and no fallback": Scenario([("a", 0)], [], [], "error:503"),
}


def build(scenario: Scenario) -> RouteEntry:
    names = [name for name, _ in scenario.targets] + list(scenario.fallbacks)
    backends = [make_backend(n, f"http://127.0.0.1:9/{n}", failures=1) for n in names]
    route = make_route(
        "m",
        scenario.targets,
        fallbacks=scenario.fallbacks,
        attempts=scenario.attempts,
        retry_on=scenario.retry_on,
        timeout=scenario.timeout,
    )
    retries = route.retries.model_copy(update={"backoff_base": 0.05, "backoff_max": 0.15})
    route = route.model_copy(update={"retries": retries})
    table: RoutingTable
    frozen = lambda: 0.0  # noqa: E731  (health clock: ejections last the whole scenario)
    table, _ = build_routing_table(
        make_config(backends, [route]), {}, {}, ProxyMetrics(CollectorRegistry()), frozen
    )
    for name in scenario.ejected:
        table.backends[f"ns/{name}"].health.record_failure()
    for name in scenario.held:
        table.backends[f"ns/{name}"].health.hold(30.0, 429)
    return table.routes["m"]


def play(scenario: Scenario) -> tuple[list[str], list[float], str]:
    route = build(scenario)
    policy = AttemptPolicy(route, None, scenario.timeout, uniform=lambda low, high: high)
    now = 0.0
    tried: list[str] = []
    backoffs: list[float] = []
    target = policy.first()
    if target is None:
        return tried, backoffs, f"error:{policy.nothing_to_try().status}"
    for outcome in scenario.outcomes:
        tried.append(target.backend.id.removeprefix("ns/"))
        now += 1.0
        if outcome == "ok":
            return tried, backoffs, "ok"
        failed = failure(outcome)
        status = failed.error.status
        if failed.retry_after and status in HOLDING_STATUSES:  # as the driver does (failures.py)
            target.backend.health.hold(failed.retry_after, status)
        decision = policy.failed(target, failed, now)
        if isinstance(decision, GiveUp):
            answer = decision.failure.answer
            if isinstance(answer, Answer):
                return tried, backoffs, f"answer:{answer.status}"
            return tried, backoffs, f"error:{decision.failure.error.status}"
        assert isinstance(decision, Retry)
        backoffs.append(decision.backoff)
        now += decision.backoff
        target = decision.target
    raise AssertionError(f"the policy went on after the last outcome: tried {tried}")


def test_every_candidate_held_says_when_to_come_back() -> None:
    route = build(Scenario([("a", 1)], [], [], "", fallbacks=("f1",)))
    primary, fallback = route.targets[0].backend.health, route.fallbacks[0].backend.health
    primary.hold(40.0, 503)
    fallback.hold(20.0, 429)  # the earliest to come back: its status, its time
    fallback.hold(5.0, 503)  # a shorter hold while a longer one runs changes nothing
    policy = AttemptPolicy(route, None, None)
    assert policy.first() is None
    error = policy.nothing_to_try()
    assert (error.status, error.code, error.headers["Retry-After"]) == (429, "upstream_rate_limited", "20")
    assert "asked to be called again later" in error.message
    primary.hold(45.0, 503)
    fallback.held_until = None  # the fallback's hold is over
    error = AttemptPolicy(route, None, None).nothing_to_try()
    assert (error.status, error.code, error.headers["Retry-After"]) == (503, "backend_unavailable", "45")


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.2", 2.0),  # a fraction (not RFC, but sent): rounded up
        ("Tue, 14 Nov 2023 22:13:27 GMT", 7.0),  # NOW + 7 as an IMF-fixdate
        ("Tuesday, 14-Nov-23 22:13:27 GMT", 7.0),  # the obsolete RFC 850 form
        ("Tue Nov 14 22:13:27 2023", 7.0),  # asctime, no zone: GMT
        ("Tue, 14 Nov 2023 22:13:10 GMT", 0.0),  # in the past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),  # absurd: bounded
        ("99999999999", 3600.0),
        ("9" * 400, 3600.0),
        ("-5", None),
        ("soon", None),
        ("7 seconds", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_attempt_policy(name: str) -> None:
    scenario = SCENARIOS[name]
    tried, backoffs, final = play(scenario)
    assert (tried, final) == (scenario.tried, scenario.final)
    if scenario.backoffs is not None:
        assert backoffs == pytest.approx(scenario.backoffs)


def test_all_down_answer_says_when_to_come_back() -> None:
    scenario = SCENARIOS["every candidate ejected: 503, the model is down"]
    route = build(scenario)
    policy = AttemptPolicy(route, None, None)
    target = policy.first()
    assert target is not None
    retry = policy.failed(target, failure("connect-failure"), 1.0)
    assert isinstance(retry, Retry)
    decision = policy.failed(retry.target, failure("connect-failure"), 2.0)
    assert isinstance(decision, GiveUp)
    wait = math.ceil(route.targets[0].backend.health.ejection_remaining())  # the earliest re-admission
    assert decision.failure.error.headers["Retry-After"] == str(wait)
    assert "Every backend of route ns/m is ejected" in decision.failure.error.message


def test_route_timeout_names_the_route() -> None:
    scenario = SCENARIOS["route timeout within a backoff"]
    policy = AttemptPolicy(build(scenario), None, scenario.timeout, uniform=lambda low, high: high)
    target = policy.first()
    assert target is not None
    decision = policy.failed(target, failure("connect-failure"), 1.0)
    assert isinstance(decision, GiveUp)
    assert decision.failure.error.message == "Route ns/m timed out after 1.02s."
