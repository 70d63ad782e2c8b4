"""OpenAI's rate-limit headers from a decision (pure).

OpenAI sends one limit per dimension — `x-ratelimit-{limit,remaining,reset}-requests` and
`-tokens` — but a Routeway request can be under several (the client's and the route's; per
minute and per day). The headers report, per dimension, the tightest budget: the one with the
least remaining, ties broken by the smaller limit, so a client that obeys them never runs into
a limit the headers did not show.

Resets are durations in OpenAI's (Go's) format: `20ms` below a second, else `1s`, `2.5s`,
`6m0s`, `1h0m0s`; rounded up to the millisecond so a client waiting that long finds room.
`Retry-After` is whole seconds, rounded up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from routeway_proxy.limits.budget import Budget, Decision, LimitKind


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes `x-ratelimit-reset-*`: `0s`, `20ms`, `1s`, `2.4s`, `6m0s`."""
    if not math.isfinite(seconds):
        seconds = 0.0 if seconds < 0 else 86400.0
    ms = math.ceil(round(seconds * 1000, 6))
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{text}s"
    if minutes:
        return f"{minutes}m{text}s"
    return f"{text}s"


def format_retry_after(seconds: float) -> str:
    """`Retry-After` in whole seconds, at least 1 (0 would invite an immediate retry)."""
    if not math.isfinite(seconds):
        return "86400"
    return str(max(1, math.ceil(round(seconds, 6))))


def tightest(budgets: Iterable[Budget], tokens: bool) -> Budget | None:
    chosen: Budget | None = None
    rpm = LimitKind.REQUESTS_PER_MINUTE
    for budget in budgets:
        if (budget.kind is not rpm) != tokens:
            continue
        if chosen is None or (budget.remaining, budget.limit) < (chosen.remaining, chosen.limit):
            chosen = budget
    return chosen


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """`x-ratelimit-*` for every answer to a limited request; `Retry-After` when rejected."""
    headers: dict[str, str] = {}
    for suffix, tokens in (("requests", False), ("tokens", True)):
        budget = tightest(decision.budgets, tokens)
        if budget is not None:
            headers[f"x-ratelimit-limit-{suffix}"] = str(budget.limit)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{suffix}"] = format_reset(budget.reset)
    if not decision.admitted:
        headers["Retry-After"] = format_retry_after(decision.retry_after)
    return headers
