"""The pydantic models and the generated CRDs (schema + CEL) give the same verdict.

The CLI (`routeway validate`) and the operator judge manifests with the pydantic models; the
API server judges them with the CRDs. A manifest one accepts and the other rejects is a bug in
one of them, so every case of the table below states the expected verdict, and both sides are
checked against it separately (the failing test names the side that disagrees):

- `test_pydantic_verdict`: `Model.model_validate(manifest)`;
- `test_api_server_verdict`: the API server's steps (crds_apiserver.admit): null pruning,
  defaulting, OpenAPI schema with unknown fields rejected, list-map keys, CEL rules. Rows
  with a `server_gap` are what the CRD cannot express (SERVER_GAPS says why): the server is
  expected to accept them, pydantic to reject them, and the operator reports such an object
  `Accepted=False` (Invalid). A gap closed later makes that row fail, on purpose;
- `test_cel_rule_verdict`: the case's CEL rule (if it names one) is what rejects it, and no
  rule fails on a valid case — evaluated with cel-expr-python;
- `test_defaults_agree`: for valid cases, the object as the API server stores it (defaults
  applied) equals what pydantic parses, so a default lives in one place: the model;
- `test_every_cel_rule_has_a_good_and_a_bad_case`: each rule ran on some valid row and
  passed, and some invalid row names it.

Rows cover, per kind: minimal and full valid objects, wrong enum, bad duration, missing
required field, out-of-range numbers, unknown fields (top and nested), pattern violations,
wrong scalar types, and the cross-field rules (openai needs url, mock block only for mock,
unique backend names, `names` only with `from: List`). The route's progressive-delivery
fields (issue 12) add: the pinned example, each step kind, weight and duration bounds at and
past their limits, defaults, and the rules (one action per step, setWeight never decreasing,
pause/interval/window/progressDeadline bounds, unique metric names, max or
maxRatioToStable per metric, max's kind per metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic
import pytest
from crds_apiserver import Admission, admit

from routeway.resources import KIND_MODELS

ABSENT: Any = object()
SPEC_RULE_MESSAGES = {
    "openai-url": "url is required when provider is openai",
    "mock-only": "mock may only be set when provider is mock",
    "unique-backends": "backend names must be unique within a route",
    "names-with-list": "allowedRoutes.namespaces.names is only used when from is List",
    "step-one-action": "a step sets exactly one of setWeight or pause (pause: {} waits for a manual promote)",
    "weights-never-decrease": "setWeight must not decrease from one step to the next",
    "pause-duration": "pause.duration must be between 1s and 720h",
    "interval": "interval must be between 1s and 1h",
    "window": "window must be at least interval and at most 24h (window defaults to 5m)",
    "unique-metrics": "metric names must be unique within an analysis",
    "progress-deadline": "progressDeadline must be between 1s and 720h",
    "header-timeout": "connections.headerTimeout must be longer than 0s",
    "body-timeout": "connections.bodyTimeout must be longer than 0s",
    "idle-timeout": "connections.idleTimeout must be longer than 0s",
    "url-userinfo": "url must not contain user:password@; put the credential in apiKeySecretRef",
    "url-query": "url must not contain a query string or fragment (?... or #...): the API path is "
    "appended to the url, and a key in a query would be rendered into ConfigMaps; put the "
    "credential in apiKeySecretRef",
    "redis-url-credentials": "url must not carry credentials or options (user:password@, "
    "?password=...): it is rendered into ConfigMaps; put the password in passwordSecretRef",
}
# What the CRD cannot check, by the key a row names in `server_gap`.
SERVER_GAPS = {
    "metric-max": "a metric's max is a number (errorRate) or a duration string (latency, ttft): "
    "no structural type fits both, so the node is untyped, and Kubernetes hides untyped fields "
    "from CEL; the CRD checks only that a number is within 0..1 and a string is a duration",
}


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    spec: Any
    valid: bool
    rule: str | None = None  # key of SPEC_RULE_MESSAGES: the CEL rule that must reject it
    status: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    server_gap: str | None = None  # key of SERVER_GAPS: invalid, yet the API server accepts it

    @property
    def server_accepts(self) -> bool:
        """The API server's expected verdict."""
        return self.valid or self.server_gap is not None

    def manifest(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "apiVersion": "routeway.dev/v1alpha1",
            "kind": self.kind,
            "metadata": {"name": "sample", "namespace": "ml"},
        }
        if self.spec is not ABSENT:
            obj["spec"] = self.spec
        if self.status is not None:
            obj["status"] = self.status
        return obj


def backend(spec: Any, valid: bool, id: str, rule: str | None = None) -> Case:
    return Case(id=f"backend-{id}", kind="ModelBackend", spec=spec, valid=valid, rule=rule)


def route(spec: Any, valid: bool, id: str, rule: str | None = None, server_gap: str | None = None) -> Case:
    return Case(id=f"route-{id}", kind="ModelRoute", spec=spec, valid=valid, rule=rule, server_gap=server_gap)


def gateway(spec: Any, valid: bool, id: str, rule: str | None = None) -> Case:
    return Case(id=f"gateway-{id}", kind="ModelGateway", spec=spec, valid=valid, rule=rule)


VLLM = "http://vllm.ml.svc:8000/v1"
OPENAI = {"provider": "openai", "url": VLLM}
MOCK = {"provider": "mock"}
ROUTE = {"model": "chat", "backends": [{"name": "llama-v1"}]}
REDIS_PW = {"name": "redis", "key": "password"}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _backends(count: int) -> list[dict[str, Any]]:
    return [{"name": f"b{i}", "weight": 1} for i in range(count)]


STEPS = [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {}}]
ERROR_RATE = {"name": "errorRate", "max": 0.02}


def _canary(steps: Any = STEPS, **canary: Any) -> dict[str, Any]:
    """A route with `strategy.canary` of these steps (and analysis, ...)."""
    return _with(ROUTE, strategy={"canary": {"steps": steps, **canary}})


def _analysis(metrics: Any = (ERROR_RATE,), **analysis: Any) -> dict[str, Any]:
    """A route whose canary has these steps' analysis with these metrics (and fields)."""
    return _canary(analysis={"metrics": list(metrics), **analysis})


def _metric(**metric: Any) -> dict[str, Any]:
    return _analysis([metric])


CONDITIONS = [
    {
        "type": "Ready",
        "status": "True",
        "reason": "Programmed",
        "message": "served by ml/default",
        "observedGeneration": 3,
        "lastTransitionTime": "2026-11-29T14:00:00Z",
    },
    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound"},
]

CASES: list[Case] = [
    # ---------------------------------------------------------------- ModelBackend
    backend(OPENAI, True, "openai-minimal"),
    backend(MOCK, True, "mock-minimal"),
    backend(
        {
            "provider": "openai",
            "url": "https://api.openai.com/v1",
            "model": "gpt-4o-mini",
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            "timeouts": {"connect": "2s", "firstByte": "1m30s", "idle": "500ms", "total": "10m"},
            "maxConcurrency": 32,
            "queueTimeout": "250ms",
            "version": "2024-07-18",
            "outlierDetection": {
                "consecutiveFailures": 3,
                "baseEjectionTime": "30s",
                "maxEjectionTime": "1h",
            },
        },
        True,
        "openai-full",
    ),
    backend(
        _with(
            MOCK,
            mock={
                "latency": "10ms",
                "timeToFirstToken": "1.5s",
                "tokensPerSecond": 42.5,
                "errorRate": 0.25,
                "maxTokens": 64,
            },
        ),
        True,
        "mock-full",
    ),
    backend(_with(MOCK, url=None, model=None), True, "null-optional-fields"),
    backend({"provider": "anthropic", "url": VLLM}, False, "unknown-provider"),
    backend({"url": VLLM}, False, "missing-provider"),
    backend(ABSENT, False, "missing-spec"),
    backend({"provider": "openai"}, False, "openai-without-url", rule="openai-url"),
    backend(_with(OPENAI, mock={"latency": "1s"}), False, "mock-block-on-openai", rule="mock-only"),
    backend(_with(OPENAI, url="ftp://files.example/v1"), False, "url-not-http"),
    # Issue 14 item 11: no query, fragment or userinfo in a backend URL (they break the upstream
    # path or carry a credential into ConfigMaps); an `@` or `:` in the path is fine.
    backend(_with(OPENAI, url="https://api.example/v1/team@ml:8"), True, "url-at-in-path"),
    backend(_with(OPENAI, url="http://vllm:8000"), True, "url-without-path"),
    backend(_with(OPENAI, url="http://vllm:8000/v1?api_key=sk-1"), False, "url-query", rule="url-query"),
    backend(_with(OPENAI, url="http://vllm:8000/v1?"), False, "url-empty-query", rule="url-query"),
    backend(_with(OPENAI, url="http://vllm:8000?x=y"), False, "url-query-without-path", rule="url-query"),
    backend(_with(OPENAI, url="http://vllm:8000/v1#top"), False, "url-fragment", rule="url-query"),
    backend(_with(OPENAI, url="http://user:sk-1@vllm:8000/v1"), False, "url-userinfo", rule="url-userinfo"),
    backend(_with(OPENAI, url="https://sk-1@api.example/v1"), False, "url-user-only", rule="url-userinfo"),
    backend(_with(OPENAI, url="http://:sk-1@vllm"), False, "url-password-only", rule="url-userinfo"),
    backend(_with(OPENAI, timeouts={"connect": "5 seconds"}), False, "bad-duration"),
    backend(_with(OPENAI, queueTimeout="1d"), False, "bad-duration-unit"),
    backend(_with(OPENAI, region="eu"), False, "unknown-field"),
    backend(_with(OPENAI, timeouts={"read": "5s"}), False, "unknown-nested-field"),
    backend(_with(OPENAI, maxConcurrency=0), False, "zero-concurrency"),
    backend(_with(MOCK, mock={"errorRate": 1.5}), False, "error-rate-above-one"),
    backend(_with(OPENAI, apiKeySecretRef={"name": "openai"}), False, "secret-ref-without-key"),
    backend(
        _with(OPENAI, apiKeySecretRef={"name": "openai", "key": "api key"}), False, "secret-key-with-space"
    ),
    backend(_with(OPENAI, version="v" * 64), False, "version-too-long"),
    backend(_with(OPENAI, maxConcurrency="10"), False, "string-for-integer"),
    backend(_with(MOCK, mock={"maxTokens": True}), False, "boolean-for-integer"),
    backend(_with(MOCK, mock={"errorRate": "0.5"}), False, "string-for-number"),
    backend(_with(OPENAI, model=7), False, "integer-for-string"),
    # ---------------------------------------------------------------- ModelRoute
    route(ROUTE, True, "minimal"),
    route(
        {
            "model": "chat",
            "gatewayRef": {"name": "edge", "namespace": "gateways"},
            "backends": [{"name": "llama-v1", "weight": 90}, {"name": "llama-v2", "weight": 10}],
            "fallbacks": [{"name": "llama-v1"}],
            "retries": {
                "attempts": 2,
                "retryOn": ["connect-failure", "timeout", "5xx", "429"],
                "backoff": "100ms",
            },
            "timeout": "2m",
            "stickiness": {"header": "x-session-id"},
        },
        True,
        "full",
    ),
    route(
        _with(ROUTE, backends=[{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]),
        True,
        "all-weights-zero",
    ),
    route(_with(ROUTE, backends=_backends(64)), True, "most-backends"),
    route(_with(ROUTE, retries={"attempts": 0, "retryOn": []}), True, "no-retries"),
    # ---------------------------------------------------------------- ModelRoute: progressive delivery
    route(
        {
            "model": "chat",
            "backends": [{"name": "llama-v2", "weight": 100}],
            "strategy": {
                "canary": {
                    "steps": STEPS,
                    "analysis": {
                        "interval": "30s",
                        "window": "5m",
                        "minRequests": 100,
                        "failureLimit": 0,
                        "onInconclusive": "Pause",
                        "metrics": [
                            {"name": "errorRate", "max": 0.02},
                            {"name": "latencyP95", "max": "20s"},
                            {"name": "ttftP95", "maxRatioToStable": 1.3},
                        ],
                    },
                }
            },
            "revisionHistoryLimit": 10,
            "paused": False,
            "progressDeadline": "30m",
        },
        True,
        "canary-pinned-example",
    ),
    route(_canary([{"setWeight": 100}]), True, "canary-one-step"),
    route(_canary([{"pause": {}}]), True, "canary-only-a-manual-pause"),
    route(_canary([{"pause": {}}, {"setWeight": 1}, {"setWeight": 100}]), True, "canary-weight-bounds"),
    route(
        _canary([{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 20}]),
        True,
        "canary-equal-weights",
    ),
    route(
        _canary([{"pause": {"duration": d}} for d in ("1s", "1.5s", "1h30m", "720h")]),
        True,
        "pause-duration-bounds",
    ),
    route(_canary([{"setWeight": w} for w in range(1, 65)]), True, "most-steps"),
    route(_analysis(), True, "analysis-defaults"),
    route(
        _analysis(
            [
                {"name": "errorRate", "max": 0, "maxRatioToStable": 2},
                {"name": "latencyP95", "max": "1m30s", "maxRatioToStable": 1.25},
                {"name": "latencyP50", "max": "500ms"},
                {"name": "ttftP95", "maxRatioToStable": 0.5},
                {"name": "ttftP50", "max": "0s"},
            ],
            interval="1s",
            window="1s",
            minRequests=0,
            failureLimit=3,
            onInconclusive="Continue",
        ),
        True,
        "analysis-full",
    ),
    route(_analysis(interval="1h", window="24h", onInconclusive="Fail"), True, "analysis-longest"),
    route(_metric(name="errorRate", max=1), True, "error-rate-max-integer"),
    route(
        _with(ROUTE, revisionHistoryLimit=1, paused=True, progressDeadline="1s"),
        True,
        "rollout-limits-low",
    ),
    route(_with(ROUTE, revisionHistoryLimit=100, progressDeadline="720h"), True, "rollout-limits-high"),
    route(_canary([{"setWeight": 10, "pause": {}}]), False, "step-with-both", rule="step-one-action"),
    route(_canary([{}]), False, "step-with-neither", rule="step-one-action"),
    route(_canary([{"pause": None}]), False, "step-with-null-pause", rule="step-one-action"),
    route(
        _canary([{"setWeight": 50}, {"pause": {}}, {"setWeight": 10}]),
        False,
        "weight-decreases",
        rule="weights-never-decrease",
    ),
    route(
        _canary([{"setWeight": 10}, {"setWeight": 30}, {"setWeight": 20}, {"setWeight": 40}]),
        False,
        "weight-decreases-later",
        rule="weights-never-decrease",
    ),
    route(_canary([{"pause": {"duration": "500ms"}}]), False, "pause-too-short", rule="pause-duration"),
    route(_canary([{"pause": {"duration": "721h"}}]), False, "pause-too-long", rule="pause-duration"),
    route(
        _canary([{"pause": {"duration": "99999999999999h"}}]),
        False,
        "pause-beyond-cel-durations",
        rule="pause-duration",
    ),
    route(_analysis(interval="500ms"), False, "interval-too-short", rule="interval"),
    route(_analysis(interval="2h", window="24h"), False, "interval-too-long", rule="interval"),
    route(_analysis(interval="10m"), False, "window-below-default-window", rule="window"),
    route(_analysis(interval="1m", window="30s"), False, "window-below-interval", rule="window"),
    route(_analysis(window="25h"), False, "window-too-long", rule="window"),
    route(
        _analysis([ERROR_RATE, {"name": "errorRate", "maxRatioToStable": 2}]),
        False,
        "duplicate-metric-names",
        rule="unique-metrics",
    ),
    route(_with(ROUTE, progressDeadline="0s"), False, "progress-deadline-zero", rule="progress-deadline"),
    route(
        _with(ROUTE, progressDeadline="721h"), False, "progress-deadline-too-long", rule="progress-deadline"
    ),
    route(_with(ROUTE, strategy={}), False, "strategy-without-canary"),
    route(_with(ROUTE, strategy={"canary": {}}), False, "canary-without-steps"),
    route(_canary([]), False, "canary-no-steps"),
    route(_canary([{"setWeight": w} for w in range(1, 66)]), False, "too-many-steps"),
    route(_canary([{"setWeight": 0}]), False, "weight-zero"),
    route(_canary([{"setWeight": 101}]), False, "weight-above-100"),
    route(_canary([{"setWeight": "10"}]), False, "string-for-set-weight"),
    route(_canary([{"setWeight": 10.5}]), False, "fraction-for-set-weight"),
    route(_canary([{"pause": {"duration": "5 minutes"}}]), False, "bad-pause-duration"),
    route(_canary([{"pause": "5m"}]), False, "string-for-pause"),
    route(_canary([{"setWeight": 10, "weight": 10}]), False, "unknown-field-in-step"),
    route(_canary(STEPS, rollback="auto"), False, "unknown-field-in-canary"),
    route(_canary(analysis={}), False, "analysis-without-metrics"),
    route(_analysis([]), False, "analysis-no-metrics"),
    route(_analysis(successLimit=1), False, "unknown-field-in-analysis"),
    route(_analysis(interval="30 s"), False, "bad-interval"),
    route(_analysis(window="5 minutes"), False, "bad-window"),
    route(_analysis(minRequests=-1), False, "negative-min-requests"),
    route(_analysis(minRequests="100"), False, "string-for-min-requests"),
    route(_analysis(failureLimit=-1), False, "negative-failure-limit"),
    route(_analysis(failureLimit=1001), False, "failure-limit-too-high"),
    route(_analysis(onInconclusive="Abort"), False, "unknown-on-inconclusive"),
    route(_metric(name="p99Latency", max="20s"), False, "unknown-metric"),
    route(_metric(max=0.02), False, "metric-without-name"),
    route(_metric(name="errorRate"), False, "metric-without-limit"),
    route(_metric(name="errorRate", max=None), False, "metric-with-null-max"),
    route(_metric(name="ttftP95", maxRatioToStable=0), False, "ratio-zero"),
    route(_metric(name="ttftP95", maxRatioToStable=-1.3), False, "ratio-negative"),
    route(_metric(name="ttftP95", maxRatioToStable="1.3"), False, "string-for-ratio"),
    route(_metric(name="errorRate", max=1.5), False, "error-rate-max-above-one"),
    route(_metric(name="errorRate", max=-0.1), False, "error-rate-max-negative"),
    route(_metric(name="latencyP95", max="20 s"), False, "latency-max-bad-duration"),
    route(_metric(name="latencyP95", max=20), False, "latency-max-number-above-one"),
    route(_metric(name="errorRate", max=0.02, min=0), False, "unknown-field-in-metric"),
    route(_metric(name="errorRate", max="2s"), False, "error-rate-max-duration", server_gap="metric-max"),
    route(_metric(name="latencyP95", max=0.5), False, "latency-max-fraction", server_gap="metric-max"),
    route(_metric(name="errorRate", max=True), False, "boolean-max", server_gap="metric-max"),
    route(_metric(name="errorRate", max=[0.02]), False, "list-max", server_gap="metric-max"),
    route(_with(ROUTE, revisionHistoryLimit=0), False, "revision-history-zero"),
    route(_with(ROUTE, revisionHistoryLimit=101), False, "revision-history-too-long"),
    route(_with(ROUTE, paused="true"), False, "string-for-paused"),
    route(_with(ROUTE, progressDeadline="30 minutes"), False, "bad-progress-deadline"),
    route(_with(ROUTE, backends=[{"name": "a", "weight": -1}]), False, "negative-weight"),
    route(_with(ROUTE, backends=[{"name": "a", "weight": 1_000_001}]), False, "weight-above-max"),
    route(
        _with(ROUTE, backends=[{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]),
        False,
        "duplicate-backend-names",
        rule="unique-backends",
    ),
    route(_with(ROUTE, backends=[]), False, "no-backends"),
    route({"model": "chat"}, False, "missing-backends"),
    route({"backends": [{"name": "a"}]}, False, "missing-model"),
    route(_with(ROUTE, model=""), False, "empty-model"),
    route(_with(ROUTE, backends=[{"name": "Llama_V1"}]), False, "backend-name-not-dns"),
    route(_with(ROUTE, backends=[{"weight": 1}]), False, "backend-without-name"),
    route(_with(ROUTE, backends=_backends(65)), False, "too-many-backends"),
    route(_with(ROUTE, fallbacks=[{"name": f"f{i}"} for i in range(17)]), False, "too-many-fallbacks"),
    route(_with(ROUTE, retries={"retryOn": ["502"]}), False, "unknown-retry-on"),
    route(_with(ROUTE, retries={"attempts": 11}), False, "too-many-attempts"),
    route(_with(ROUTE, timeout="2 minutes"), False, "bad-timeout"),
    route(_with(ROUTE, stickiness={"header": "x session"}), False, "bad-header-name"),
    route(_with(ROUTE, fallback=[{"name": "a"}]), False, "unknown-field"),
    route(_with(ROUTE, backends=[{"name": "a", "weigth": 5}]), False, "unknown-field-in-list-item"),
    route(_with(ROUTE, backends=[{"name": "a", "weight": "5"}]), False, "string-for-weight"),
    # ---------------------------------------------------------------- ModelGateway
    gateway(ABSENT, True, "no-spec"),
    gateway({}, True, "empty-spec"),
    gateway(
        {
            "replicas": 3,
            "image": "ghcr.io/routeway/proxy:0.1.0",
            "workers": 4,
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "service": {"type": "LoadBalancer", "port": 8080},
            "allowedRoutes": {"namespaces": {"from": "List", "names": ["ml", "team-a"]}},
            "auth": {"apiKeySecretRef": {"name": "gateway-keys"}},
            "maxRequestBodyBytes": 1_048_576,
        },
        True,
        "full",
    ),
    gateway({"allowedRoutes": {"namespaces": {"from": "All"}}}, True, "all-namespaces"),
    gateway(
        {"limits": {"redis": {"url": "rediss://redis.ml.svc:6380/2", "passwordSecretRef": REDIS_PW}}},
        True,
        "redis",
    ),
    gateway({"limits": {"redis": {"url": "redis://redis:6379"}}}, True, "redis-without-db"),
    gateway(
        {"limits": {"redis": {"url": "redis://:hunter2@redis:6379/0"}}},
        False,
        "redis-url-password",
        rule="redis-url-credentials",
    ),
    gateway(
        {"limits": {"redis": {"url": "redis://default:hunter2@redis:6379"}}},
        False,
        "redis-url-userinfo",
        rule="redis-url-credentials",
    ),
    gateway(
        {"limits": {"redis": {"url": "redis://redis:6379/0?password=hunter2"}}},
        False,
        "redis-url-query",
        rule="redis-url-credentials",
    ),
    gateway({"limits": {"redis": {"url": "http://redis:6379"}}}, False, "redis-url-not-redis"),
    gateway({"limits": {"redis": {"url": "redis://redis:6379/100"}}}, False, "redis-url-db-too-large"),
    gateway({"replicas": 0}, True, "scaled-to-zero"),
    gateway(
        {"allowedRoutes": {"namespaces": {"from": "Same", "names": ["ml"]}}},
        False,
        "names-without-list",
        rule="names-with-list",
    ),
    gateway(
        {"allowedRoutes": {"namespaces": {"names": ["ml"]}}},
        False,
        "names-with-default-from",
        rule="names-with-list",
    ),
    gateway({"allowedRoutes": {"namespaces": {"from": "Selector"}}}, False, "unknown-from"),
    gateway(
        {"allowedRoutes": {"namespaces": {"from": "List", "names": ["Team_A"]}}}, False, "bad-namespace-name"
    ),
    gateway({"service": {"type": "External"}}, False, "unknown-service-type"),
    gateway({"service": {"port": 0}}, False, "port-zero"),
    gateway({"service": {"port": 70000}}, False, "port-too-high"),
    gateway({"replicas": -1}, False, "negative-replicas"),
    gateway({"workers": 0}, False, "zero-workers"),
    gateway({"resources": {"requests": {"cpu": "lots"}}}, False, "bad-quantity"),
    gateway({"maxRequestBodyBytes": 100}, False, "body-limit-too-small"),
    gateway({"auth": {}}, False, "auth-without-secret"),
    gateway({"replica": 3}, False, "unknown-field"),
    gateway({"replicas": "3"}, False, "string-for-replicas"),
    gateway(
        {
            "connections": {
                "headerTimeout": "500ms",
                "bodyTimeout": "1m",
                "idleTimeout": "2m30s",
                "maxPerWorker": 1,
            }
        },
        True,
        "connections",
    ),
    gateway({"connections": {"headerTimeout": "0s"}}, False, "zero-header-timeout", rule="header-timeout"),
    gateway({"connections": {"bodyTimeout": "0.0ms"}}, False, "zero-body-timeout", rule="body-timeout"),
    gateway({"connections": {"idleTimeout": "0m0s"}}, False, "zero-idle-timeout", rule="idle-timeout"),
    gateway({"connections": {"idleTimeout": "10"}}, False, "connections-duration-without-unit"),
    gateway({"connections": {"maxPerWorker": 0}}, False, "connections-cap-zero"),
    # ---------------------------------------------------------------- status, as the operator writes it
    Case(
        "backend-status",
        "ModelBackend",
        MOCK,
        True,
        status={"observedGeneration": 3, "conditions": CONDITIONS, "routes": 2},
    ),
    Case(
        "route-status",
        "ModelRoute",
        ROUTE,
        True,
        status={
            "observedGeneration": 1,
            "conditions": CONDITIONS,
            "backendWeights": "llama-v1=90,llama-v2=10",
            "gateway": "ml/default",
            "configRevision": "5f2c",
        },
    ),
    Case(
        "gateway-status",
        "ModelGateway",
        {},
        True,
        status={
            "observedGeneration": 2,
            "conditions": CONDITIONS,
            "replicas": 2,
            "readyReplicas": 1,
            "address": "http://routeway-default.ml.svc:80/v1",
            "configRevision": "5f2c",
            "routes": 4,
        },
    ),
]

_VALID = [c for c in CASES if c.valid]


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def test_case_ids_are_unique() -> None:
    assert len(set(_ids(CASES))) == len(CASES)


def _pydantic(case: Case) -> tuple[Any, str]:
    try:
        return KIND_MODELS[case.kind].model_validate(case.manifest()), ""
    except pydantic.ValidationError as exc:
        return None, str(exc)


def _api_server(case: Case, crds_by_kind: dict[str, dict[str, Any]]) -> Admission:
    return admit(crds_by_kind[case.kind], case.manifest())


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_pydantic_verdict(case: Case) -> None:
    parsed, errors = _pydantic(case)
    verdict = "accepts" if parsed is not None else "rejects"
    assert (parsed is not None) == case.valid, (
        f"pydantic {verdict} {case.id}; expected the opposite\n{errors}"
    )


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_api_server_verdict(case: Case, crds_by_kind: dict[str, dict[str, Any]]) -> None:
    admission = _api_server(case, crds_by_kind)
    verdict = "accepts" if admission.accepted else "rejects"
    gap = f" (known gap: {SERVER_GAPS[case.server_gap]})" if case.server_gap else ""
    assert admission.accepted == case.server_accepts, (
        f"the CRD {verdict} {case.id}; expected the opposite{gap}\n" + "\n".join(admission.errors)
    )


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.valid or c.rule], ids=_ids([c for c in CASES if c.valid or c.rule])
)
def test_cel_rule_verdict(case: Case, crds_by_kind: dict[str, dict[str, Any]]) -> None:
    cel_errors = _api_server(case, crds_by_kind).cel_errors
    if case.rule is None:
        assert cel_errors == []
    else:
        assert any(SPEC_RULE_MESSAGES[case.rule] in e for e in cel_errors), cel_errors


@pytest.mark.parametrize("case", _VALID, ids=_ids(_VALID))
def test_defaults_agree(case: Case, crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """What the API server stores after defaulting is what pydantic parses, field for field."""
    parsed, errors = _pydantic(case)
    assert parsed is not None, errors
    stored = _api_server(case, crds_by_kind).stored
    assert stored["spec"] == parsed.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    if case.status is not None:
        assert stored["status"] == parsed.status.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_every_cel_rule_is_exercised(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """A new rule in CEL_RULES needs rows in the table above."""
    messages = {
        validation["message"]
        for crd in crds_by_kind.values()
        for version in crd["spec"]["versions"]
        for node in _nodes(version["schema"]["openAPIV3Schema"])
        for validation in node.get("x-kubernetes-validations", [])
    }
    assert messages == set(SPEC_RULE_MESSAGES.values())


def test_every_cel_rule_has_a_good_and_a_bad_case(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """A bad row names each rule, and each rule ran (and passed) on at least one valid row."""
    evaluated_on_valid = {
        message for case in _VALID for message in _api_server(case, crds_by_kind).cel_evaluated
    }
    for key, message in SPEC_RULE_MESSAGES.items():
        assert any(case.rule == key for case in CASES), f"no invalid row for {key}"
        assert message in evaluated_on_valid, f"no valid row on which {key} runs"


def test_server_gaps_are_pydantic_rejections() -> None:
    """A gap row is invalid (only the API server accepts it) and names a documented gap."""
    for case in CASES:
        if case.server_gap is not None:
            assert not case.valid and case.rule is None, case.id
            assert case.server_gap in SERVER_GAPS, case.id


def _nodes(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = [schema]
    for child in schema.get("properties", {}).values():
        found += _nodes(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key])
    return found
