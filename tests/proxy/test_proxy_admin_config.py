"""`/config` shows nothing a client could use against an upstream (issue 14 item 12), with
values planted in every place a credential could reach a config: a backend URL's userinfo,
query and fragment (validation rejects them; the proxy also serves hand-written configs), the
Redis URL's password, the credential values themselves, and a client key's digest in a
free-text field. Each must be gone from the body and the rejection header, while the
references (Secret namespace, name, key name) that say where a credential lives stay visible.

Matrix: served config x planted value; the last rejection's header; a URL without anything to
hide is shown unchanged; unparsable URLs are hidden whole.
"""

from __future__ import annotations

import hashlib

import aiohttp
import orjson
from proxy_helpers import Gateway, make_backend, make_config, make_route
from routeway_proxy.admin import public_url

from routeway.proxyconfig import ClientConfig, GatewayLimits, hash_client_key

UPSTREAM_KEY = "sk-planted-upstream"
CLIENT_KEY = "ck-planted-client"
GATEWAY_KEY = "gk-planted-gateway"
# A digest of a key the runtime does not hold (a rotated-out key, say): only its shape gives it away.
DIGEST = "sha256:" + hashlib.sha256(b"ck-planted-rotated-out").hexdigest()
PLANTED = [
    UPSTREAM_KEY,
    CLIENT_KEY,
    GATEWAY_KEY,
    hash_client_key(GATEWAY_KEY).removeprefix("sha256:"),
    DIGEST.removeprefix("sha256:"),
    "url-user",
    "url-password",
    "query-key",
    "fragment-key",
    "redis-password",
]


async def _get(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.text()


async def test_config_hides_every_planted_value_and_keeps_references(gateway: Gateway) -> None:
    # a query and fragment are refused when a ProxyConfig is parsed; /config redacts them
    # anyway (defence in depth), so the planted URL bypasses validation here
    backend = make_backend(
        "b", "http://url-user:url-password@127.0.0.1:9/v1", credential="ns/upstream/api-key", version=DIGEST
    ).model_copy(update={"url": "http://url-user:url-password@127.0.0.1:9/v1?api_key=query-key#fragment-key"})
    plain = make_backend("p", "http://127.0.0.1:9/v1/team@ml")
    config = make_config(
        [backend, plain],
        [make_route("gpt", [("b", 1), ("p", 1)])],
        client_keys=("ns/gateway-keys/team",),
        require_client_key=True,
    )
    limits = GatewayLimits.model_validate(
        {"redisUrl": "redis://:redis-password@127.0.0.1:9/0", "redisPasswordRef": "ns/redis/password"}
    )
    client = ClientConfig.model_validate({"id": "ns/team", "keyRef": "ns/team-key/key"})
    served_gateway = config.gateway.model_copy(update={"limits": limits, "clients": (client,)})
    config = config.model_copy(update={"gateway": served_gateway}).with_revision()
    credentials = {
        "ns/upstream/api-key": UPSTREAM_KEY,
        "ns/gateway-keys/team": hash_client_key(GATEWAY_KEY),  # what the credential store holds
        "ns/team-key/key": hash_client_key(CLIENT_KEY),
        "ns/redis/password": "redis-password",
    }
    gateway.runtime.apply(config, credentials)
    gateway.runtime.reject("bad.yaml", [f"ModelBackend ns/b: url {backend.url} is not allowed"])

    status, headers, body = await _get(f"{gateway.admin_url}/config")
    assert status == 200
    shown = body + headers["x-routeway-last-rejection"]
    assert [value for value in PLANTED if value in shown] == []
    assert "ModelBackend ns/b: url http://<redacted>@127.0.0.1:9/v1?<redacted> is not allowed" in shown
    document = orjson.loads(body)
    backends = {b["name"]: b for b in document["backends"]}
    assert backends["b"]["url"] == "http://<redacted>@127.0.0.1:9/v1?<redacted>#<redacted>"
    assert backends["b"]["credentialRef"] == "ns/upstream/api-key"
    assert backends["p"]["url"] == "http://127.0.0.1:9/v1/team@ml"
    assert document["gateway"]["limits"]["redisUrl"] == "redis://<redacted>@127.0.0.1:9/0"
    assert document["gateway"]["limits"]["redisPasswordRef"] == "ns/redis/password"
    assert document["gateway"]["clientKeyRefs"] == ["ns/gateway-keys/team"]
    assert document["gateway"]["clients"][0]["keyRef"] == "ns/team-key/key"


def test_public_url_forms() -> None:
    assert public_url("https://api.example/v1") == "https://api.example/v1"
    assert public_url("http://h/v1?") == "http://h/v1?<redacted>"
    assert public_url("http://h#") == "http://h#<redacted>"
    assert public_url("http://tok@h:1") == "http://<redacted>@h:1"
    assert public_url("http://[::1/v1?k=secret") == "<redacted>"
