"""The token estimate (`limits/estimate.py`) and the header formats (`limits/headers.py`), pure.

Matrix: chat (text, content parts, media, names, tool calls, tools), completions (text, token
ids, lists), embeddings (no output); the output bound (max_completion_tokens over max_tokens
over the default, times n; nonsense values ignored); UTF-8 bytes, not characters. Resets in
OpenAI's format at each magnitude; Retry-After whole seconds, at least 1; the tightest budget
per dimension.
"""

from __future__ import annotations

import pytest
from routeway_proxy.limits.budget import Budget, Decision, LimitKind
from routeway_proxy.limits.estimate import (
    DEFAULT_MAX_TOKENS,
    MEDIA_PART_TOKENS,
    estimate_tokens,
    output_tokens,
    prompt_tokens,
)
from routeway_proxy.limits.headers import format_reset, format_retry_after, ratelimit_headers


def test_chat_prompt() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "a" * 8},  # 2 + 4
            {
                "role": "user",
                "name": "bob",
                "content": [{"type": "text", "text": "b" * 5}, {"type": "image_url"}],
            },
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        ],
    }
    # priming 3; 3 x overhead 4; 2; name 1 + text 2 + media; arguments 1
    assert prompt_tokens(body) == 3 + 12 + 2 + 1 + 2 + MEDIA_PART_TOKENS + 1
    with_tools = {**body, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert prompt_tokens(with_tools) > prompt_tokens(body)


def test_bytes_not_characters() -> None:
    assert prompt_tokens({"prompt": "日本語の"}) == 3  # 12 bytes
    assert prompt_tokens({"prompt": "abcd"}) == 1


@pytest.mark.parametrize(
    ("value", "tokens"),
    [("x" * 9, 3), ([1, 2, 3, 4], 4), (["xxxx", "xxxxxxxx"], 3), ([[1, 2], [3]], 3), (None, 0), (7, 0)],
)
def test_completion_and_embedding_inputs(value: object, tokens: int) -> None:
    assert prompt_tokens({"prompt": value}) == tokens
    assert prompt_tokens({"input": value}) == tokens


def test_output_bound() -> None:
    assert output_tokens({"messages": [], "max_tokens": 50}) == 50
    assert output_tokens({"messages": [], "max_tokens": 50, "max_completion_tokens": 70}) == 70
    assert output_tokens({"messages": [], "max_tokens": 50, "n": 3}) == 150
    assert output_tokens({"messages": []}) == DEFAULT_MAX_TOKENS
    assert output_tokens({"messages": []}, default_max_tokens=10) == 10
    assert output_tokens({"prompt": "x", "max_tokens": True, "n": -1}) == DEFAULT_MAX_TOKENS
    assert output_tokens({"prompt": "x", "max_tokens": "9"}) == DEFAULT_MAX_TOKENS
    assert output_tokens({"input": "x", "max_tokens": 50}) == 0  # embeddings
    assert estimate_tokens({"input": "x" * 8}) == 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (-1.0, "0s"),
        (0.0201, "21ms"),
        (0.02, "20ms"),
        (0.9999, "1s"),
        (1.0, "1s"),
        (2.4, "2.4s"),
        (12.345, "12.345s"),
        (360.0, "6m0s"),
        (361.5, "6m1.5s"),
        (3600.0, "1h0m0s"),
        (86399.0, "23h59m59s"),
    ],
)
def test_reset_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_retry_after() -> None:
    assert [format_retry_after(s) for s in (0.0, 0.2, 1.0, 1.01, 12.0)] == ["1", "1", "1", "2", "12"]


def test_headers_report_the_tightest_budget() -> None:
    rpm = LimitKind.REQUESTS_PER_MINUTE
    tpm, tpd = LimitKind.TOKENS_PER_MINUTE, LimitKind.TOKENS_PER_DAY
    budgets = (
        Budget("client:a", rpm, 600, 10, 59.0),
        Budget("route:r", rpm, 100, 10, 6.0),  # same remaining, smaller limit
        Budget("client:a", tpm, 10000, 9000, 6.0),
        Budget("client:a", tpd, 100000, 500, 3600.0),
    )
    headers = ratelimit_headers(Decision(True, budgets, 0.0))
    assert headers == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": "500",
        "x-ratelimit-reset-tokens": "1h0m0s",
    }
    assert ratelimit_headers(Decision(True, (), 0.0)) == {}
