"""The same scenarios on every store — in-process dict, shared table, real Redis — through the
`Limiter` the request path will call, on one fake clock.

Matrix: the burst of issue 13 with real concurrency (20 x 1,000 tokens against 5,000/min:
5 admitted, settled use ≤ 5,000); settle refunds (more requests fit) and extra charges;
client + route all-or-nothing; refill over (fake) time; keys that share a prefix stay apart;
a day budget resets at UTC midnight; headers and the 429 a refused request would get; a peek
reports budgets refilled to now and never changes them.
"""

from __future__ import annotations

import asyncio

import pytest
from limits_helpers import DAY, FakeClock
from routeway_proxy.limits.answer import rejection_error
from routeway_proxy.limits.budget import LimitKind
from routeway_proxy.limits.estimate import estimate_tokens
from routeway_proxy.limits.limiter import Limiter, Limits, Subject
from routeway_proxy.limits.local import LimitStore

CHAT = Subject("route", "default/chat", Limits(requests_per_minute=1000))


def client(tpm: int | None = None, rpm: int | None = None, tpd: int | None = None) -> Subject:
    return Subject("client", "default/search-team", Limits(rpm, tpm, tpd))


def body(max_tokens: int) -> dict[str, object]:
    return {"model": "chat", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": max_tokens}


async def test_concurrent_burst_cannot_overshoot(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    subjects = [client(tpm=5000), CHAT]
    request = body(1000 - 17)  # estimate: 3 + 4 + 10 prompt tokens + 983 = 1000
    assert estimate_tokens(request) == 1000

    async def one() -> int:
        admission = await limiter.reserve(subjects, estimate_tokens(request))
        if not admission.admitted:
            return 0
        await asyncio.sleep(0)  # the answer takes a while: everyone reserves meanwhile
        used = 990  # the upstream's usage: prompt 17 + completion 973
        await limiter.settle(admission.ticket, used)
        return used

    used = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(1 for u in used if u) == 5
    assert sum(used) <= 5000
    # settled 5 x 990: 50 tokens came back, not enough for another 1,000
    assert not (await limiter.reserve(subjects, 1000)).admitted
    assert (await limiter.reserve(subjects, 50)).admitted


async def test_settle_returns_unused_tokens(store: LimitStore, clock: FakeClock) -> None:
    limiter = Limiter(store, "test")
    subjects = [client(tpm=5000)]
    tickets = []
    for _ in range(5):
        admission = await limiter.reserve(subjects, 1000)
        assert admission.admitted
        tickets.append(admission.ticket)
    assert not (await limiter.reserve(subjects, 1000)).admitted
    for ticket in tickets:
        await limiter.settle(ticket, 200)  # 800 unused each
    admitted = 0
    while (await limiter.reserve(subjects, 1000)).admitted:
        admitted += 1
    assert admitted == 4  # 5000 - 5 x 200 = 4000 free
    clock.advance(12.0)  # 1000 tokens refill in 12 s at 5000/min
    assert (await limiter.reserve(subjects, 1000)).admitted
    assert not (await limiter.reserve(subjects, 1)).admitted


async def test_settle_charges_extra(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    subjects = [client(tpm=5000)]
    admission = await limiter.reserve(subjects, 1000)
    await limiter.settle(admission.ticket, 4500)
    assert (await limiter.reserve(subjects, 500)).admitted
    refused = await limiter.reserve(subjects, 1)
    assert not refused.admitted
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_client_and_route_are_all_or_nothing(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    route = Subject("route", "default/chat", Limits(tokens_per_minute=3000))
    both = [client(tpm=10000), route]
    assert (await limiter.reserve(both, 2000)).admitted
    refused = await limiter.reserve(both, 2000)
    assert not refused.admitted
    assert refused.decision is not None and refused.decision.failed is not None
    assert refused.decision.failed.key == "route:default/chat"
    # the client's budget was not touched by the refusal: 8000 left for it alone
    assert (await limiter.reserve([client(tpm=10000)], 8000)).admitted


async def test_keys_sharing_a_prefix_are_separate_budgets(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    names = ["default/team", "default/team-a", "default/team-ab", "default/team-abc"]
    for name in names:
        subject = Subject("client", name, Limits(requests_per_minute=2))
        assert (await limiter.reserve([subject], 0)).admitted
        assert (await limiter.reserve([subject], 0)).admitted
        assert not (await limiter.reserve([subject], 0)).admitted


async def test_day_budget_resets_at_utc_midnight(store: LimitStore, clock: FakeClock) -> None:
    limiter = Limiter(store, "test")
    clock.now = 20000 * DAY + DAY - 60.0  # 23:59 UTC
    subjects = [client(tpd=3000)]
    assert (await limiter.reserve(subjects, 3000)).admitted
    refused = await limiter.reserve(subjects, 1)
    assert not refused.admitted
    assert refused.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert refused.headers["Retry-After"] == "60"
    clock.advance(60.0)
    assert (await limiter.reserve(subjects, 3000)).admitted


async def test_headers_and_refusal(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    subjects = [client(rpm=600, tpm=6000), CHAT]
    admission = await limiter.reserve(subjects, 4000)
    assert admission.headers == {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "599",
        "x-ratelimit-reset-requests": "100ms",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "2000",
        "x-ratelimit-reset-tokens": "40s",
    }
    refused = await limiter.reserve(subjects, 3000)
    error = rejection_error(refused)
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.headers["Retry-After"] == "10"
    assert "client default/search-team" in error.message and "Requested 3000" in error.message
    too_large = rejection_error(await limiter.reserve(subjects, 6001))
    assert (too_large.status, too_large.code) == (429, "request_too_large")


@pytest.mark.parametrize("replicas", [1, 3])
async def test_each_pod_enforces_its_share(store: LimitStore, replicas: int) -> None:
    limiter = Limiter(store, "test", replicas=replicas)
    subjects = [client(rpm=10)]
    admitted = 0
    while (await limiter.reserve(subjects, 0)).admitted:
        admitted += 1
    assert admitted == 10 // replicas


async def test_requests_only_limits_need_no_settlement(store: LimitStore) -> None:
    limiter = Limiter(store, "test")
    admission = await limiter.reserve([client(rpm=1)], 500)
    assert admission.admitted and admission.ticket is not None and admission.ticket.budgets == ()
    await limiter.settle(admission.ticket, 10)
    assert not (await limiter.reserve([client(rpm=1)], 0)).admitted
    assert LimitKind.REQUESTS_PER_MINUTE.field == "requestsPerMinute"


async def test_peek_reads_budgets_and_never_changes_them(store: LimitStore, clock: FakeClock) -> None:
    """A peek (the headers of a request refused before the limit stage) reports the budgets
    refilled to now and reserves nothing: after any number of peeks the budget admits exactly
    what it would have without them, and a budget never used stays absent from the store."""
    limiter = Limiter(store, "test")
    team = client(tpm=5000, rpm=10, tpd=100_000)
    fresh = await limiter.peek([client(tpm=700, rpm=3)])  # nothing stored for it, nothing written
    assert fresh["x-ratelimit-remaining-requests"] == "3" and fresh["x-ratelimit-remaining-tokens"] == "700"
    assert fresh["x-ratelimit-reset-requests"] == "0s" and "Retry-After" not in fresh
    assert (await limiter.reserve([team], 3000)).admitted
    for _ in range(20):
        headers = await limiter.peek([team])
        assert headers["x-ratelimit-limit-requests"] == "10"
        assert headers["x-ratelimit-remaining-requests"] == "9"
        assert headers["x-ratelimit-limit-tokens"] == "5000"  # the tightest token budget
        assert headers["x-ratelimit-remaining-tokens"] == "2000"
        assert headers["x-ratelimit-reset-tokens"] == "36s"
    clock.advance(12.0)  # 1,000 tokens and 2 requests refill
    headers = await limiter.peek([team])
    assert headers["x-ratelimit-remaining-tokens"] == "3000"
    assert headers["x-ratelimit-remaining-requests"] == "10"
    # exactly 3,000 fit: the peeks took none of them
    assert (await limiter.reserve([team], 3000)).admitted
    assert not (await limiter.reserve([team], 1)).admitted
    after = await limiter.peek([team])
    assert after["x-ratelimit-remaining-tokens"] == "0"
    assert after["x-ratelimit-remaining-requests"] == "9"  # the refused one reserved nothing either
    assert await limiter.peek([Subject("client", "nobody", Limits())]) == {}  # no limits: no headers
