"""Client keys are matched exactly: near misses of a valid key get 401, never its identity.

Matrix (for a ModelClient's key and for a gateway-wide key alike): the key itself
authenticates, in `Authorization: Bearer` and in `api-key`; spaces around it are not part of
it (HTTP and RFC 6750 allow them) and change nothing; everything else is another key and gets
401 `invalid_api_key` in the OpenAI shape with `WWW-Authenticate`, never echoing what was sent:
a prefix, an extension (a character more, a space and more), a case change, a space inside,
the key under another scheme (`Basic`, or no scheme at all). Both headers sent: the Bearer
token decides, a valid `api-key` beside a wrong token does not help. Two clients whose keys
are a prefix of each other are each attributed to themselves (the `client` label). Every
endpoint that authenticates (chat, completions, embeddings, the model list and a model) does so
exactly.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from proxy_helpers import Gateway, Upstream, make_backend, make_config, make_route

from routeway.proxyconfig import ClientConfig, GatewayConfig, ProxyConfig, hash_client_key

CLIENT_KEY = "sk-team-PLANTED-1f2e3d4c"
GATEWAY_KEY = "gw-Key-7a6b5c4d3e2f"
SHORT_KEY = "sk-short"
LONG_KEY = "sk-short-and-then-some"  # SHORT_KEY is a prefix of it: each is its own client
CREDENTIALS = {
    "ns/team-key/k": hash_client_key(CLIENT_KEY),
    "ns/gw-key/k": hash_client_key(GATEWAY_KEY),
    "ns/short-key/k": hash_client_key(SHORT_KEY),
    "ns/long-key/k": hash_client_key(LONG_KEY),
}


def keyed_config(upstream: Upstream) -> ProxyConfig:
    config = make_config(
        [make_backend("b1", upstream.base("ok"))],
        [make_route("gpt", [("b1", 1)])],
        client_keys=("ns/gw-key/k",),
    )
    clients = [
        ClientConfig.model_validate({"id": f"ns/{name}", "keyRef": f"ns/{name}-key/k", "models": None})
        for name in ("team", "short", "long")
    ]
    gateway = GatewayConfig.model_validate(
        {**config.gateway.model_dump(by_alias=True), "requireClientKey": True, "clients": clients}
    )
    return config.model_copy(update={"gateway": gateway}).with_revision()


async def call(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions",
            json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
            headers=headers,
        ) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def requests_of(gateway: Gateway, client: str) -> float:
    gateway.runtime.metrics.ledger.flush()
    labels = {"route": "ns/gpt", "backend": "ns/b1", "code": "200", "client": client}
    return gateway.runtime.metrics.registry.get_sample_value("routeway_requests_total", labels) or 0.0


def near_misses(key: str) -> list[str]:
    """Other keys that a comparison by prefix, by length, case-blind or whitespace-blind
    would confuse with `key`."""
    return [
        key[:-1],
        key[: len(key) // 2],
        key + "0",
        key + key,
        key + " extra",
        key.swapcase(),
        key.upper(),
        key[:5] + " " + key[5:],
        " ".join(key),
    ]


@pytest.fixture
async def keyed(gateway: Gateway, upstream: Upstream) -> Gateway:
    gateway.runtime.apply(keyed_config(upstream), CREDENTIALS)
    return gateway


@pytest.mark.parametrize(("key", "client"), [(CLIENT_KEY, "ns/team"), (GATEWAY_KEY, "")])
async def test_the_key_itself_authenticates_in_either_header(keyed: Gateway, key: str, client: str) -> None:
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer {key}"},  # the scheme is case-insensitive (RFC 7235)
        {"Authorization": f"Bearer   {key}  "},
        {"api-key": key},
        {"api-key": f"  {key} "},
    ):
        assert (await call(keyed, headers))[0] == 200, headers
    assert requests_of(keyed, client) == 5


@pytest.mark.parametrize("key", [CLIENT_KEY, GATEWAY_KEY])
async def test_near_misses_of_a_key_get_401_in_the_openai_shape(keyed: Gateway, key: str) -> None:
    for other in near_misses(key):
        for headers in ({"Authorization": f"Bearer {other}"}, {"api-key": other}):
            status, answer_headers, body = await call(keyed, headers)
            assert status == 401, headers
            error: dict[str, Any] = orjson.loads(body)["error"]
            assert error["code"] == "invalid_api_key" and set(error) == {"message", "type", "param", "code"}
            assert answer_headers["WWW-Authenticate"].startswith("Bearer")
            assert other.encode() not in body and key.encode() not in body
    assert requests_of(keyed, "ns/team") == 0 and requests_of(keyed, "") == 0


@pytest.mark.parametrize("key", [CLIENT_KEY, GATEWAY_KEY])
async def test_the_key_under_another_scheme_is_refused(keyed: Gateway, key: str) -> None:
    for value in (key, f"Basic {key}", f"Token {key}", f"Bearer{key}", f"Bearer: {key}"):
        assert (await call(keyed, {"Authorization": value}))[0] == 401, value


async def test_the_bearer_token_decides_when_both_headers_are_sent(keyed: Gateway) -> None:
    wrong = CLIENT_KEY + "0"
    assert (await call(keyed, {"Authorization": f"Bearer {wrong}", "api-key": CLIENT_KEY}))[0] == 401
    assert (await call(keyed, {"Authorization": f"Bearer {CLIENT_KEY}", "api-key": wrong}))[0] == 200
    # a scheme that is not Bearer is no token: the api-key header is read then
    assert (await call(keyed, {"Authorization": f"Basic {wrong}", "api-key": GATEWAY_KEY}))[0] == 200
    assert requests_of(keyed, "ns/team") == 1 and requests_of(keyed, "") == 1


async def test_keys_that_are_prefixes_of_each_other_keep_their_own_clients(keyed: Gateway) -> None:
    assert (await call(keyed, {"Authorization": f"Bearer {SHORT_KEY}"}))[0] == 200
    assert (await call(keyed, {"Authorization": f"Bearer {LONG_KEY}"}))[0] == 200
    assert (await call(keyed, {"api-key": LONG_KEY}))[0] == 200
    assert (requests_of(keyed, "ns/short"), requests_of(keyed, "ns/long")) == (1, 2)
    assert (await call(keyed, {"Authorization": f"Bearer {SHORT_KEY}-and"}))[0] == 401


ENDPOINTS = [
    ("POST", "/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}),
    ("POST", "/completions", {"model": "gpt", "prompt": "x"}),
    ("POST", "/embeddings", {"model": "gpt", "input": "x"}),
    ("GET", "/models", None),
    ("GET", "/models/gpt", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_matches_keys_exactly(
    keyed: Gateway, method: str, path: str, body: dict[str, Any] | None
) -> None:
    async def status_with(headers: dict[str, str]) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{keyed.v1}{path}", json=body, headers=headers) as response,
        ):
            await response.read()
            return response.status

    assert await status_with({"Authorization": f"Bearer {CLIENT_KEY}"}) == 200
    assert await status_with({"api-key": GATEWAY_KEY}) == 200
    for other in (CLIENT_KEY[:-1], CLIENT_KEY + "0", CLIENT_KEY.upper(), GATEWAY_KEY + " x"):
        assert await status_with({"Authorization": f"Bearer {other}"}) == 401, other
    assert await status_with({}) == 401
