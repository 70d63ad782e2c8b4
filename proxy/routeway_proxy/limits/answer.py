"""The refusal a client gets when the limit stage does not admit its request.

Over a limit: 429 `rate_limit_exceeded` (type `requests`, as OpenAI sends it) with
`Retry-After` and the `x-ratelimit-*` headers, and a message in OpenAI's words naming the
subject (`client default/search-team`, `route default/chat`) and the limit, never a key. A
request larger than a whole limit can never pass: 429 `request_too_large`, so a client does
not retry it. The store unavailable under `FailClosed`: 503 `rate_limit_unavailable` with
`Retry-After: 1` — the gateway's failure, not the client's budget.
"""

from __future__ import annotations

from routeway_proxy.errors import RETRY_AFTER_SECONDS, SERVER_ERROR, ProxyError
from routeway_proxy.limits.headers import format_reset
from routeway_proxy.limits.limiter import Admission


class LimitRefusal(ProxyError):
    """The limit stage's own refusal (its headers are set, or its store failed): told apart by
    type, not by code — a 413 body is `request_too_large` as well."""


_UNITS = {
    "requestsPerMinute": "requests per min (RPM)",
    "tokensPerMinute": "tokens per min (TPM)",
    "tokensPerDay": "tokens per day (TPD)",
}


def rejection_error(admission: Admission) -> LimitRefusal:
    decision = admission.decision
    if decision is None or decision.failed is None:
        return LimitRefusal(
            503,
            "Rate limits cannot be checked right now; try again shortly.",
            "rate_limit_unavailable",
            SERVER_ERROR,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    failed = decision.failed
    budget = next(b for b in decision.budgets if b.key == failed.key and b.kind == failed.kind)
    scope, _, name = failed.key.partition(":")
    used = failed.limit - budget.remaining
    what = f"Rate limit reached for {scope} {name} on {_UNITS[failed.kind.field]}: Limit {failed.limit}, Used {used}, Requested {failed.amount}."
    if decision.too_large:
        message, code = (
            f"{what} The request is larger than the limit and cannot succeed.",
            "request_too_large",
        )
    else:
        message = f"{what} Please try again in {format_reset(decision.retry_after)}."
        code = "rate_limit_exceeded"
    return LimitRefusal(429, message, code, "requests", headers=admission.headers)
