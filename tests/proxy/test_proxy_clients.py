"""ModelClients in the proxy: what the credential store must hold, the caller, cost, windows.

Covers: a client key stored as a value (not a `sha256:` hash) authenticates nobody; a key
claimed by two clients authenticates neither; an open gateway's caller; the `client` label
and `routeway_cost_total` for a client and for no client, pricing from a rollout arm's
pinned backend spec; the UTC minute/day windows and the `GET /usage` report (a window that
turned starts over, another process's older window is not summed); the caller's identity
passed to the accounting record; the key never in a log record.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route
from routeway_proxy.usage import UsageFamilies, usage_report

from routeway.proxyconfig import ClientConfig, GatewayConfig, ProxyConfig, hash_client_key

KEY = "sk-team-PLANTED-1f2e3d4c"
PRICING = {"inputPerMillion": 1.5, "outputPerMillion": 6.0, "currency": "USD"}


def with_clients(config: ProxyConfig, *clients: dict[str, Any]) -> ProxyConfig:
    gateway = GatewayConfig.model_validate(
        {
            **config.gateway.model_dump(by_alias=True),
            "requireClientKey": True,
            "clients": [ClientConfig.model_validate(c) for c in clients],
        }
    )
    return config.model_copy(update={"gateway": gateway}).with_revision()


def team(name: str, models: list[str] | None = None) -> dict[str, Any]:
    return {"id": f"ns/{name}", "keyRef": f"ns/{name}-key/k", "models": models}


async def post(gateway: Gateway, model: str, key: str | None) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {key}"} if key else {},
        ) as response,
    ):
        return response.status, await response.json()


def value(gateway: Gateway, name: str, **labels: str) -> float:
    gateway.runtime.metrics.ledger.flush()
    return gateway.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def priced_config(upstream: Upstream) -> ProxyConfig:
    backend = make_backend("b1", upstream.base("ok"), pricing=PRICING)
    return make_config([backend], [make_route("gpt", [("b1", 1)])])


async def test_a_key_value_where_a_hash_belongs_authenticates_nobody(
    gateway: Gateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """An older control plane's store (values): refused, and the log names the ref only."""
    caplog.set_level(logging.DEBUG)
    config = with_clients(priced_config(upstream), team("search"))
    gateway.runtime.apply(config, {"ns/search-key/k": KEY})
    assert (await post(gateway, "gpt", KEY))[0] == 401
    gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key(KEY)})
    assert (await post(gateway, "gpt", KEY))[0] == 200
    assert "ns/search-key/k is not stored as a sha256 hash" in caplog.text
    assert KEY not in caplog.text


async def test_the_api_key_header_authenticates_and_stays_at_the_gateway(
    gateway: Gateway, upstream: Upstream
) -> None:
    config = with_clients(priced_config(upstream), team("search"))
    gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key(KEY)})
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions",
            json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
            headers={"api-key": KEY},
        ) as response,
    ):
        assert response.status == 200
    assert (
        value(
            gateway,
            "routeway_requests_total",
            route="ns/gpt",
            backend="ns/b1",
            code="200",
            client="ns/search",
        )
        == 1
    )
    (seen,) = upstream.seen
    assert KEY not in str(seen.header_items)


async def test_a_key_two_clients_claim_authenticates_neither(gateway: Gateway, upstream: Upstream) -> None:
    config = with_clients(priced_config(upstream), team("a"), team("b"), team("c"))
    stored = hash_client_key(KEY)
    gateway.runtime.apply(
        config, {"ns/a-key/k": stored, "ns/b-key/k": stored, "ns/c-key/k": hash_client_key("c")}
    )
    assert (await post(gateway, "gpt", KEY))[0] == 401
    assert (await post(gateway, "gpt", "c"))[0] == 200


async def test_client_label_cost_and_usage_windows(gateway: Gateway, upstream: Upstream) -> None:
    config = with_clients(priced_config(upstream), team("search", ["gp?"]))
    gateway.runtime.apply(config, {"ns/search-key/k": hash_client_key(KEY)})
    for _ in range(3):
        assert (await post(gateway, "gpt", KEY))[0] == 200
    status, body = await post(gateway, "other", KEY)
    assert (status, body["error"]["code"]) == (403, "model_not_allowed")
    assert KEY not in str(body)
    cost = 3 * (5 * 1.5 + 2 * 6.0) / 1_000_000  # the upstream reports 5 prompt, 2 completion tokens
    labels = {"route": "ns/gpt", "backend": "ns/b1"}
    assert value(gateway, "routeway_requests_total", **labels, code="200", client="ns/search") == 3
    assert (
        value(gateway, "routeway_requests_total", route="", backend="", code="403", client="ns/search") == 1
    )
    assert value(gateway, "routeway_tokens_total", **labels, type="prompt", client="ns/search") == 15
    assert value(
        gateway, "routeway_cost_total", **labels, client="ns/search", currency="USD"
    ) == pytest.approx(cost)
    assert value(gateway, "routeway_requests_total", **labels, code="200", client="") == 0
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.admin_url}/usage") as response:
        document = await response.json()
    (search,) = document["clients"]
    assert search["client"] == "ns/search" and search["currency"] == "USD"
    for window in ("minute", "day"):
        assert search[window]["requests"] == 4
        assert (search[window]["promptTokens"], search[window]["completionTokens"]) == (15, 6)
        assert search[window]["cost"] == pytest.approx(cost)


async def test_an_open_gateway_counts_cost_under_no_client(gateway: Gateway, upstream: Upstream) -> None:
    gateway.runtime.apply(priced_config(upstream), {})
    assert gateway.runtime.table is not None and gateway.runtime.table.gateway_caller.client_id is None
    assert (await post(gateway, "gpt", None))[0] == 200
    labels = {"route": "ns/gpt", "backend": "ns/b1", "client": ""}
    assert value(gateway, "routeway_requests_total", **labels, code="200") == 1
    assert value(gateway, "routeway_cost_total", **labels, currency="USD") == pytest.approx(
        (5 * 1.5 + 2 * 6.0) / 1_000_000
    )


async def test_a_pinned_backend_spec_is_priced_by_its_own_pricing(
    gateway: Gateway, upstream: Upstream
) -> None:
    """A rollout arm that pins an older spec of a backend is charged at that spec's prices."""
    current = make_backend("b1", upstream.base("ok"), pricing=PRICING)
    older = make_backend("b1", upstream.base("ok"), pricing={**PRICING, "currency": "EUR"})
    route = make_route("gpt", [("b1", 1)]).model_copy(update={"pinned_backends": (older,)})
    gateway.runtime.apply(make_config([current], [route]), {})
    assert (await post(gateway, "gpt", None))[0] == 200
    labels = {"route": "ns/gpt", "backend": "ns/b1", "client": ""}
    assert value(gateway, "routeway_cost_total", **labels, currency="EUR") > 0
    assert value(gateway, "routeway_cost_total", **labels, currency="USD") == 0


def test_usage_windows_turn_and_sum_only_the_current_window() -> None:
    minute = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a minute and a day boundary
    families = UsageFamilies(CollectorRegistry())
    one = families.for_client("ns/a")
    one.add(minute + 5, 10, 1, 0.5, "USD")
    one.add(minute + 61, 7, 2, 0.25, "USD")  # the next minute: the minute window starts over
    report = usage_report(_collect(families), ["ns/a", "ns/idle"], minute + 62)
    a, idle = report["clients"]
    assert a["minute"] == {
        "start": "2027-01-15T08:01:00Z",
        "requests": 1,
        "promptTokens": 7,
        "completionTokens": 2,
        "cost": 0.25,
        "costByCurrency": {"USD": 0.25},
    }
    assert (a["day"]["requests"], a["day"]["promptTokens"], a["day"]["cost"]) == (2, 17, 0.75)
    assert a["day"]["start"] == "2027-01-15T00:00:00Z"
    assert idle["minute"]["requests"] == 0 and idle["currency"] is None and idle["day"]["cost"] == 0.0
    # read a minute later with no request since: the process's minute is an old one, not summed
    later = usage_report(_collect(families), ["ns/a"], minute + 150)
    assert later["clients"][0]["minute"]["requests"] == 0 and later["clients"][0]["day"]["requests"] == 2


def _collect(families: UsageFamilies) -> Any:
    return [*families.window.collect(), *families.window_cost.collect()]
