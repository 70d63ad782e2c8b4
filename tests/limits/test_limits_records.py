"""Uncertain Redis reservations: a reserve that ran on the server but whose answer never came
back in time (or whose request was cancelled while it waited) is released or settled by its
record, exactly once, against a real redis-server on 127.0.0.1.

The answer is delayed by a TCP relay on loopback (`ReplyHoldingRelay`) that passes commands
to Redis at once and holds Redis's replies while a test says so: the script runs, the client
times out. Matrix: FailClosed refuses and the reservation is released in the background, even
while the release attempts themselves keep failing; FailOpen
admits with a ticket of the uncertain record and settles the real use into the budget; a
request cancelled while its reserve waits is released; releases and settlements act once in
any order, and a release that arrives before its reservation makes the reservation refuse;
a settled reservation leaves no record behind (with usage, without, requests only); a
shutdown waits for the settlements and releases under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from limits_helpers import FakeClock
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis_server import RedisServer
from routeway_proxy.limits.budget import Charge, Demand, LimitKind
from routeway_proxy.limits.limiter import FailureMode, Limiter, Limits, Subject
from routeway_proxy.limits.local import StoreUnavailable
from routeway_proxy.limits.redis_store import RedisStore, connect
from routeway_proxy.limits.wiring import ProcessLimits

from routeway.proxyconfig import GatewayLimits

TEAM = Subject("client", "default/search-team", Limits(requests_per_minute=10, tokens_per_minute=5000))
WARM = Subject("client", "default/other", Limits(requests_per_minute=100))
PREFIX = "routeway:{limits}:"
SAFETY = 30.0  # an outer bound so a hang fails the test instead of the run; not a timing claim


class ReplyHoldingRelay:
    """Loopback TCP relay to Redis: commands pass at once, replies wait while `held`."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._open = asyncio.Event()
        self._open.set()
        self.sent = 0  # client → server chunks passed on
        self._sent_event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def hold(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def sent_more_than(self, count: int) -> None:
        while self.sent <= count:
            self._sent_event.clear()
            await self._sent_event.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        tasks = {
            asyncio.create_task(self._pipe(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, writer, upstream=False)),
        }
        self._tasks |= tasks
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while data := await source.read(65536):
            if not upstream:
                await self._open.wait()
            sink.write(data)
            await sink.drain()
            if upstream:
                self.sent += 1
                self._sent_event.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(redis_server: RedisServer) -> AsyncIterator[ReplyHoldingRelay]:
    made = ReplyHoldingRelay(redis_server.port)
    await made.start()
    yield made
    made.resume()
    await made.close()


@contextlib.asynccontextmanager
async def direct(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[tuple[Limiter, Redis]]:
    """A limiter straight to Redis (no relay), to read budgets and keys as they really are."""
    client = connect(redis_server.url, timeout=5.0)
    limiter = Limiter(RedisStore(client, clock=clock), "redis")
    try:
        yield limiter, client
    finally:
        await limiter.store.close()


async def through(
    relay: ReplyHoldingRelay, clock: FakeClock, mode: FailureMode, store_timeout: float = 0.2
) -> Limiter:
    """A limiter through the relay, its connection open and its reserve script loaded (so a
    held reply holds the script's answer, not the handshake's or a NOSCRIPT)."""
    store = RedisStore(connect(relay.url, timeout=60.0), timeout=store_timeout, clock=clock)
    limiter = Limiter(store, "redis", on_failure=mode, release_delays=[0.05] * 200)
    warm = await limiter.reserve([WARM], 1)
    await limiter.settle(warm.ticket, None)  # and forgotten: only the test's records remain
    return limiter


async def budgets(limiter: Limiter) -> tuple[str, str]:
    headers = await limiter.peek([TEAM])
    return headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-remaining-tokens"]


async def records(client: Redis) -> list[bytes]:
    return sorted(await client.keys(f"{PREFIX}r:*"))


async def test_fail_closed_releases_a_reservation_that_ran_after_the_timeout(
    redis_server: RedisServer, relay: ReplyHoldingRelay, clock: FakeClock
) -> None:
    limiter = await through(relay, clock, FailureMode.FAIL_CLOSED)
    async with direct(redis_server, clock) as (reader, _):
        assert (await limiter.reserve([TEAM], 1000)).admitted  # a request in flight: 1 and 1,000
        relay.hold()
        sent = relay.sent
        refused = await asyncio.wait_for(limiter.reserve([TEAM], 1000), SAFETY)
        assert not refused.admitted and refused.unavailable
        # the script did run: its request and tokens are taken although the caller was refused
        assert await budgets(reader) == ("8", "3000")
        # the release fails while the replies are held (each retry opens a connection whose
        # handshake waits too): let several attempts fail before the replies come back
        await asyncio.wait_for(relay.sent_more_than(sent + 3), SAFETY)
        relay.resume()
        await asyncio.wait_for(limiter.drain(), SAFETY)
        assert await budgets(reader) == ("9", "4000")  # exactly the first request's share
        await limiter.store.close()


async def test_fail_open_settles_the_uncertain_reservation_from_the_real_use(
    redis_server: RedisServer, relay: ReplyHoldingRelay, clock: FakeClock
) -> None:
    limiter = await through(relay, clock, FailureMode.FAIL_OPEN)
    async with direct(redis_server, clock) as (reader, client):
        relay.hold()
        admitted = await asyncio.wait_for(limiter.reserve([TEAM], 1000), SAFETY)
        assert admitted.admitted and admitted.unavailable and admitted.ticket is not None
        assert await budgets(reader) == ("9", "4000")  # reserved on the server, unknown here
        relay.resume()
        await asyncio.wait_for(limiter.settle(admitted.ticket, 300), SAFETY)
        assert await budgets(reader) == ("9", "4700")  # the real use replaced the estimate
        assert await records(client) == []
        await limiter.store.close()


async def test_a_reserve_cancelled_while_it_waits_is_released(
    redis_server: RedisServer, relay: ReplyHoldingRelay, clock: FakeClock
) -> None:
    limiter = await through(relay, clock, FailureMode.FAIL_CLOSED, store_timeout=60.0)
    async with direct(redis_server, clock) as (reader, _):
        relay.hold()
        sent = relay.sent
        waiting = asyncio.create_task(limiter.reserve([TEAM], 1000))
        await asyncio.wait_for(relay.sent_more_than(sent), SAFETY)  # the call is on the server
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        relay.resume()
        await asyncio.wait_for(limiter.drain(), SAFETY)
        assert await budgets(reader) == ("10", "5000")
        await limiter.store.close()


async def test_release_and_settlement_act_once_in_any_order(
    redis_server: RedisServer, clock: FakeClock
) -> None:
    async with direct(redis_server, clock) as (reader, client):
        store = reader.store
        demands = [
            Demand(TEAM.key, LimitKind.REQUESTS_PER_MINUTE, 10, 1),
            Demand(TEAM.key, LimitKind.TOKENS_PER_MINUTE, 5000, 1000),
        ]
        assert (await store.reserve(demands, "kept")).admitted
        assert (await store.reserve(demands, "a")).admitted
        await store.release(demands, "a")
        await store.release(demands, "a")  # a retry of a release that did get through
        assert await budgets(reader) == ("9", "4000")
        # a release that overtook its reservation: the reservation, arriving late, refuses
        await store.release(demands, "b")
        with pytest.raises(StoreUnavailable):
            await store.reserve(demands, "b")
        assert await budgets(reader) == ("9", "4000")
        # a settlement sent twice applies once
        assert (await store.reserve(demands, "c")).admitted
        refund = [Charge(TEAM.key, LimitKind.TOKENS_PER_MINUTE, 5000, -700.0, 0.0)]  # used 300
        await store.settle(refund, "c")
        await store.settle(refund, "c")
        assert await budgets(reader) == ("8", "3700")
        # the unsettled reservation holds its time; the others are tombstones (from the repeats)
        held = {
            key.decode().removeprefix(f"{PREFIX}r:"): await client.get(key) for key in await records(client)
        }
        assert float(held.pop("kept")) == clock.now
        assert held == {"a": b"x", "b": b"x", "c": b"x"}


@pytest.mark.parametrize(
    ("subject", "used"),
    [
        (TEAM, 300),
        (TEAM, None),  # usage unknown: the reservation stands as the charge, its record goes
        (TEAM, 1000),  # exactly the estimate: nothing to change but the record
        (Subject("route", "default/chat", Limits(requests_per_minute=5)), None),
    ],
)
async def test_a_settled_reservation_leaves_no_record(
    redis_server: RedisServer, clock: FakeClock, subject: Subject, used: int | None
) -> None:
    async with direct(redis_server, clock) as (limiter, client):
        admission = await limiter.reserve([subject], 1000)
        assert admission.ticket is not None and await records(client) != []
        await limiter.settle(admission.ticket, used)
        assert await records(client) == []


async def test_shutdown_waits_for_settlements_and_releases(
    redis_server: RedisServer, relay: ReplyHoldingRelay, clock: FakeClock
) -> None:
    """A worker shutting down (`ProcessLimits.close`) first lets the settlements under way and
    the releases of uncertain reservations finish: none is cut off with the connection."""
    limits = ProcessLimits(CollectorRegistry())
    limits.configure(
        GatewayLimits.model_validate({"redisUrl": relay.url, "onRedisFailure": "FailClosed"}), {}
    )
    limiter = limits.limiter
    day = Subject("client", "default/daily", Limits(tokens_per_day=5000))  # no refill within the day
    first = await limiter.reserve([day], 1000)
    assert first.admitted
    await limits.settle(limiter, first.ticket, 200)  # a task: the answer never waits for Redis
    relay.hold()
    refused = await asyncio.wait_for(limiter.reserve([day], 1000), SAFETY)  # ran, answer held
    assert not refused.admitted and refused.unavailable
    relay.resume()
    await asyncio.wait_for(limits.close(), SAFETY)
    reader = Limiter(RedisStore(connect(redis_server.url, timeout=5.0)), "redis")
    headers = await reader.peek([day])
    assert headers["x-ratelimit-remaining-tokens"] == "4800"  # settled to 200; the refused one released
    await reader.store.close()
