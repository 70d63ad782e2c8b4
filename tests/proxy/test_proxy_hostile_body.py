"""Malformed request bodies get a 400 in the OpenAI shape before any work is done for them
(issue 14, items 1 and 4), over raw sockets against a gateway with every stage on.

Matrix: bodies that are not a JSON object in UTF-8 (empty, scalars, arrays, BOM, NaN,
Infinity, a number beyond a double, a lone surrogate escape, invalid UTF-8 in a string,
trailing garbage, truncation) → `invalid_json`; nesting beyond `MAX_JSON_DEPTH` (arrays,
objects, alternating, inside `messages`, at orjson's own write limit of 254 and read limit of
1,024) → `invalid_json`, while exactly `MAX_JSON_DEPTH` and a shallow body with thousands of
brackets are served intact; each field the gateway reads with a wrong type or value →
`invalid_value` naming it (counts: integers from 0 to 2^31 - 1). Each on a plain, a limited
and a cached route: the upstream is not called, no limit is reserved (the next good request
sees the full budget) and the cache is not consulted (its request counter moves only for the
good one). A duplicated `model` takes its last value and the upstream receives one. The mock
provider through the gateway refuses the issue's huge-answer requests. The depth check's two
paths (orjson's write limit, verified at import, and the Python walk) agree at the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from proxy_fuzz import KEY, Answer, Case, Target, check, drain_log_problems, fuzz_target, send
from proxy_fuzz_cases import nested
from routeway_proxy.cache.metrics import CACHE_REQUESTS
from routeway_proxy.pipeline import admit
from routeway_proxy.pipeline.admit import MAX_JSON_DEPTH

BEARER = (b"Authorization", b"Bearer " + KEY.encode())
MESSAGES = b'[{"role":"user","content":"hi"}]'
LIMIT = 10**9  # the fuzz config's requestsPerMinute on `limited`


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with fuzz_target() as started:
        yield started


async def post(target: Target, body: bytes, path: bytes = b"/v1/chat/completions") -> Answer:
    case = Case(b"POST", path, (BEARER,), body)
    answer = await send(target, case)
    assert check(case, answer) == []
    assert drain_log_problems(target) == []
    return answer


def chat_body(model: str, extra: bytes = b"") -> bytes:
    return b'{"model":"' + model.encode() + b'","messages":' + MESSAGES + extra + b"}"


def deep(levels: int, kind: int = 0) -> bytes:
    """A chat body whose `extra` field makes the whole body `levels` deep."""
    return chat_body("MODEL", b',"extra":' + nested(levels - 1, kind))


NOT_JSON = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"\xef\xbb\xbf" + chat_body("MODEL"),
    chat_body("MODEL", b',"temperature":NaN'),
    chat_body("MODEL", b',"temperature":Infinity'),
    chat_body("MODEL", b',"temperature":-Infinity'),
    chat_body("MODEL", b',"temperature":1e400'),
    chat_body("MODEL", b',"user":"\\ud800"'),
    chat_body("MODEL", b',"user":"\xe9"'),
    chat_body("MODEL") + b"x",
    chat_body("MODEL")[:-1],
    deep(MAX_JSON_DEPTH + 1),
    deep(MAX_JSON_DEPTH + 1, kind=1),
    deep(MAX_JSON_DEPTH + 1, kind=2),
    deep(254),
    deep(255),
    deep(1024),
    deep(1025),
    b'{"model":"MODEL","messages":[{"role":"user","content":' + nested(MAX_JSON_DEPTH, 0) + b"}]}",
]

WRONG_FIELDS: list[tuple[str, Any]] = [
    ("model", 1),
    ("model", ""),
    ("model", ["MODEL"]),
    ("messages", "hi"),
    ("messages", {"role": "user"}),
    ("stream", "true"),
    ("stream", 1),
    ("stream_options", []),
    ("stream_options", "x"),
    ("max_tokens", -1),
    ("max_tokens", "5"),
    ("max_tokens", 1.5),
    ("max_tokens", True),
    ("max_tokens", 1e300),
    ("max_tokens", 2**31),
    ("max_tokens", 2**64 - 1),  # the largest integer the parser keeps as one
    ("max_completion_tokens", -5),
    ("max_completion_tokens", [1]),
    ("n", -1),
    ("n", 2**40),
    ("n", "2"),
    ("n", 2.0),
    ("n", False),
]


async def assert_nothing_was_done(target: Target, model: str) -> None:
    """The refusals reached neither the upstream, nor the limits, nor the cache."""
    assert target.upstream.received == 0
    answer = await post(target, chat_body(model))
    assert answer.status == 200
    assert target.upstream.received == 1
    if model == "limited":
        assert answer.headers["x-ratelimit-remaining-requests"] == str(LIMIT - 1)
    if model == "cached":
        registry = target.runtime.metrics.registry
        looked = sum(
            registry.get_sample_value(f"{CACHE_REQUESTS}_total", {"route": "ns/cached", "result": result})
            or 0.0
            for result in ("hit", "miss", "bypass")
        )
        assert looked == 1.0


@pytest.mark.parametrize("model", ["gpt", "limited", "cached"])
async def test_a_body_that_is_not_a_json_object_is_400_before_any_work(target: Target, model: str) -> None:
    for body in NOT_JSON:
        answer = await post(target, body.replace(b"MODEL", model.encode()))
        assert answer.status == 400, body[:80]
        error = orjson.loads(answer.body)["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json", body[:80]
    await assert_nothing_was_done(target, model)


@pytest.mark.parametrize("model", ["gpt", "limited", "cached"])
async def test_a_field_the_gateway_reads_with_a_wrong_type_is_400_naming_it(
    target: Target, model: str
) -> None:
    for name, value in WRONG_FIELDS:
        document = {"model": model, "messages": [{"role": "user", "content": "hi"}], name: value}
        answer = await post(target, orjson.dumps(document))
        assert answer.status == 400, (name, value)
        error = orjson.loads(answer.body)["error"]
        assert (error["code"], error["param"]) == ("invalid_value", name), (name, value)
    await assert_nothing_was_done(target, model)


async def test_the_depth_limit_itself_is_served_intact(target: Target) -> None:
    body = deep(MAX_JSON_DEPTH).replace(b"MODEL", b"gpt")
    assert (await post(target, body)).status == 200
    assert orjson.loads(target.upstream.last_body)["extra"] == orjson.loads(body)["extra"]


async def test_a_shallow_body_with_many_brackets_is_served(target: Target) -> None:
    """More brackets than the limit takes the walk, which must not mistake breadth for depth."""
    messages = [{"role": "user", "content": [{"type": "text", "text": f"part {i}"}]} for i in range(2000)]
    answer = await post(target, orjson.dumps({"model": "gpt", "messages": messages}))
    assert answer.status == 200
    assert len(orjson.loads(target.upstream.last_body)["messages"]) == 2000


async def test_a_duplicated_model_takes_its_last_value_and_the_upstream_gets_one(target: Target) -> None:
    body = b'{"model":"absent","messages":' + MESSAGES + b',"model":"gpt"}'
    assert (await post(target, body)).status == 200
    assert target.upstream.last_body.count(b'"model"') == 1


@pytest.mark.parametrize(
    ("path", "document", "param"),
    [
        (b"/v1/embeddings", {"model": "mock", "input": ["x"] * 64, "dimensions": 65_536}, "dimensions"),
        (
            b"/v1/chat/completions",
            {
                "model": "mock",
                "messages": [{"role": "user", "content": "w" * 1000}],
                "max_tokens": 100_000,
                "n": 16,
            },
            "max_tokens",
        ),
    ],
)
async def test_the_mock_provider_refuses_a_huge_answer(
    target: Target, path: bytes, document: dict[str, Any], param: str
) -> None:
    answer = await post(target, orjson.dumps(document), path)
    assert answer.status == 400
    assert orjson.loads(answer.body)["error"]["param"] == param


@pytest.mark.parametrize("fast", [True, False])
def test_the_depth_check_is_exact_on_both_paths(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """The orjson path (verified at import) and the walk it falls back to agree at the limit."""
    if fast:
        assert admit._DUMPS_WRAPS == 254 - MAX_JSON_DEPTH  # the probe found orjson's write limit
    else:
        monkeypatch.setattr(admit, "_DUMPS_WRAPS", None)
    for kind in (0, 1):
        assert not admit.nests_too_deep(orjson.loads(deep(MAX_JSON_DEPTH, kind)))
        assert admit.nests_too_deep(orjson.loads(deep(MAX_JSON_DEPTH + 1, kind)))
    assert admit.nests_too_deep(orjson.loads(deep(MAX_JSON_DEPTH + 1, 2)))
    assert admit.nests_too_deep(orjson.loads(deep(1000)))
