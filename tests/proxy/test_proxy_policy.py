"""The attempt policy (routeway_proxy.pipeline.policy), driven by tables of events, no I/O.

Each scenario is a route and the outcome of each attempt in order; the policy's answers give
the sequence of backends tried, the backoff before each retry and the final answer
(`ok`, `answer:<status>` for the upstream's own answer relayed, `error:<status>` for one the
gateway makes). Time advances one second per attempt plus the backoffs, so route timeouts
are part of the table. Jitter is fixed at its maximum (backoff = the exponential step).

Matrix: success; each failure reason (connect-failure, timeout, idle-timeout, total-timeout,
disconnect, overloaded, 429, 5xx) with and without its retryOn value; retries then fallbacks;
a retry avoiding the backend that failed; exponential backoff; the route timeout before an
attempt and across a backoff; every candidate ejected (503 + Retry-After); no candidate at all.
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
from routeway_proxy.pipeline.policy import OVERLOADED, AttemptPolicy, Failure, GiveUp, Retry
from routeway_proxy.table import RouteEntry, RoutingTable, build_routing_table

DEFAULT_RETRY_ON = ("connect-failure", "5xx", "429")


def failure(outcome: str) -> Failure:
    """The `Failure` the driver (pipeline/attempts.py, relay.py) builds for each outcome."""
    if outcome == "connect-failure":
        return Failure(outcome, outcome, make_upstream_unreachable("no connection"))
    if outcome == "timeout":
        return Failure(outcome, outcome, make_upstream_timeout("no first byte"))
    if outcome in ("idle-timeout", "total-timeout"):
        return Failure(outcome, None, make_upstream_timeout(outcome))
    if outcome == "disconnect":
        return Failure(outcome, None, make_upstream_unreachable("dropped"))
    if outcome == "overloaded":
        return Failure(outcome, OVERLOADED, make_overloaded("no slot"))
    if outcome == "429":
        return Failure("429", "429", make_upstream_failed(429, "limited"), answer=Answer(429))
    if outcome == "5xx":
        return Failure("5xx", "5xx", make_upstream_failed(503, "unavailable"), answer=Answer(503))
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
    "idle timeout never retried": Scenario(
        [("a", 1)], ["idle-timeout"], ["a"], "error:504", fallbacks=("f1",), retry_on=("timeout", "5xx")
    ),
    "total timeout never retried": Scenario(
        [("a", 1)], ["total-timeout"], ["a"], "error:504", fallbacks=("f1",)
    ),
    "disconnect mid-answer never retried": Scenario(
        [("a", 1)], ["disconnect"], ["a"], "error:502", fallbacks=("f1",)
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
        decision = policy.failed(target, failure(outcome), now)
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
