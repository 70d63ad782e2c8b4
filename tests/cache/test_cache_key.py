"""The cache key and which requests are cacheable (`routeway_proxy.cache.key`).

Matrix: field order (top level and nested) · excluded fields (`stream`, `stream_options`,
`user`) vs fields that change the answer · numbers (1 and 1.0, -0.0, booleans are not 1) ·
scope (Client: per client; Route: shared) · route and endpoint kind · no collisions from
part boundaries · cacheable and never-cacheable requests.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cache_helpers import chat_body
from routeway_proxy.cache.key import CacheScope, cache_key, canonical_body, uncacheable_reason


def key(body: dict[str, Any], client: str | None = "default/a", route: str = "default/chat") -> str:
    return cache_key(route, "chat", "Client", client, body)


def test_field_order_does_not_change_the_key() -> None:
    one = orjson.loads(b'{"model":"chat","temperature":0.2,"messages":[{"role":"user","content":"hi"}]}')
    two = orjson.loads(b'{"messages":[{"content":"hi","role":"user"}],"temperature":0.2,"model":"chat"}')
    assert key(one) == key(two)


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": False},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "someone-else"},
    ],
)
def test_fields_that_do_not_change_the_answer_are_not_in_the_key(extra: dict[str, Any]) -> None:
    assert key(chat_body(**extra)) == key(chat_body())


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0.7},
        {"max_tokens": 5},
        {"n": 2},
        {"seed": 1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_fields_that_change_the_answer_are_in_the_key(extra: dict[str, Any]) -> None:
    assert key(chat_body(**extra)) != key(chat_body())


def test_prompt_text_is_compared_exactly() -> None:
    assert key(chat_body("hello")) != key(chat_body("hello "))
    assert key(chat_body("hello")) != key(chat_body("Hello"))


def test_integral_floats_are_integers() -> None:
    assert key(orjson.loads(b'{"max_tokens": 1.0, "temperature": 1}')) == key(
        orjson.loads(b'{"max_tokens": 1, "temperature": 1.0}')
    )
    assert key({"temperature": 0.50}) == key({"temperature": 0.5})
    assert key({"temperature": -0.0}) == key({"temperature": 0})
    assert key({"temperature": 0.5}) != key({"temperature": 0.25})
    assert canonical_body({"a": [1.0, {"b": 2.0}]}) == b'{"a":[1,{"b":2}]}'


def test_booleans_are_not_numbers() -> None:
    assert key({"logit_bias": {"1": True}}) != key({"logit_bias": {"1": 1}})


def test_client_scope_isolates_clients() -> None:
    body = chat_body()
    assert key(body, client="default/a") != key(body, client="default/b")
    assert key(body, client="default/a") == key(body, client="default/a")


def test_route_scope_shares_between_clients() -> None:
    body = chat_body()
    a = cache_key("default/chat", "chat", "Route", "default/a", body)
    b = cache_key("default/chat", "chat", "Route", "default/b", body)
    assert a == b
    assert a != cache_key("default/chat", "chat", "Client", "default/a", body)


def test_route_and_kind_are_in_the_key() -> None:
    body = {"model": "m", "prompt": "x", "input": "x"}
    assert key(body, route="default/one") != key(body, route="default/two")
    assert cache_key("r", "completions", "Route", None, body) != cache_key(
        "r", "embeddings", "Route", None, body
    )


def test_part_boundaries_cannot_collide() -> None:
    body = chat_body()
    assert cache_key("ab", "c", "Client", "x", body) != cache_key("a", "bc", "Client", "x", body)
    assert cache_key("r", "chat", "Client", "a", body) != cache_key("r", "chatclient:a", "Route", None, body)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", chat_body(temperature=1.3)),  # sampled answers are cached (documented choice)
        ("chat", chat_body(n=3)),
        ("chat", chat_body(tools=[{"type": "function", "function": {"name": "f"}}])),
        ("chat", chat_body(logprobs=False)),
        ("completions", {"model": "m", "prompt": "x"}),
        ("embeddings", {"model": "m", "input": ["a", "b"]}),
    ],
)
def test_cacheable_requests(kind: str, body: dict[str, Any]) -> None:
    assert uncacheable_reason(kind, body) is None


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("chat", chat_body(store=True), "store"),
        ("chat", chat_body(logprobs=True), "logprobs"),
        ("chat", chat_body(top_logprobs=2), "logprobs"),
        ("completions", {"model": "m", "prompt": "x", "logprobs": 3}, "logprobs"),
        ("models", {}, "endpoint"),
    ],
)
def test_never_cacheable_requests(kind: str, body: dict[str, Any], reason: str) -> None:
    assert uncacheable_reason(kind, body) == reason


PINNED_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
    "floats": {
        "model": "m",
        "temperature": 1.0,
        "top_p": 0.5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "y"}]}],
        "x": -0.0,
        "big": 1e16,
        "nested": {"a": [1.0, 2.5, {"b": 3.0}], "t": True, "n": None},
        "stream": True,
        "user": "u",
    },
}


@pytest.mark.parametrize(
    ("body", "scope", "client", "digest"),
    [
        ("plain", "Route", None, "e098f8cd0a5aeba0df893df76e8dfafff7c1c7c7512d2db1d2b97531cbded769"),
        ("plain", "Client", "ns/team", "15675a4662b3e8612fc2943accb260d636ceba78c7cbd8a8307838c1e9cc051e"),
        ("plain", "Client", None, "87f985acd0ea2c6ee12b4b49d15591f02607496f9d359882cbddd3b2415df542"),
        ("floats", "Route", None, "802b96e466a53e933f8dfc5932d5a5dce8191dc7982e0f75eea8ffa96b80346e"),
        ("floats", "Client", "ns/team", "783b12f3d21a80599ff418b83868010d5c2013f53e6486bf5cda5d95746b9cb4"),
        ("floats", "Client", None, "677f061f3fae22b90cf5b9dbe999b355c76307c27252ac3d09ef1360807e804e"),
    ],
)
def test_keys_are_stable_across_versions(
    body: str, scope: CacheScope, client: str | None, digest: str
) -> None:
    """Pods of different versions share one Redis during a rollout: the same request must get
    the same key. Digests computed by the first released implementation (main f141a01)."""
    assert cache_key("ns/route", "chat", scope, client, PINNED_BODIES[body]) == digest
