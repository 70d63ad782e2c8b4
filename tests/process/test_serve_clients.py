"""`routeway serve` with ModelClients (issue 13): keys, model permissions, identity, cost.

Covers, with the official `openai` client against two workers: several ModelClients and a
gateway key; 401 for no key, an unknown key, a prefix or an extension of a real key and a
malformed Authorization header; 403 `model_not_allowed` for a model outside a client's list
(served or not) and 404 for a name its list allows that no route serves; `/v1/models` per key;
the Azure-style `api-key` header; the gateway key's full access; the `client` label and
`routeway_cost_total` from the backend's pricing; `GET /usage` summed over the workers; and the
planted key values found nowhere — not in the log, `/metrics`, `/config`, `/routes`,
`/observations`, `/usage`, an error answer, `routeway render`'s output, or what reached the
upstream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from process_rig import Launch, Routeway, Upstream, eventually, routeway_command

SEARCH_KEY = "sk-search-PLANTED-5f0c1a9e7d3b"
OPS_KEY = "sk-ops-PLANTED-88a1c0ffee42"
ADMIN_KEY = "sk-admin-PLANTED-0d15ea5e77"
KEYS = (SEARCH_KEY, OPS_KEY, ADMIN_KEY)
PRICE_IN, PRICE_OUT = 2.0, 8.0  # per million tokens; the upstream reports 3 prompt + 1 completion


def manifests(upstream_url: str) -> str:
    return (
        f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {{name: default, namespace: default}}
spec:
  auth: {{apiKeySecretRef: {{name: gateway-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gateway-keys, namespace: default}}
stringData: {{admin: {ADMIN_KEY}}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: upstream, namespace: default}}
spec:
  provider: openai
  url: {upstream_url}
  model: model-a
  pricing: {{inputPerMillionTokens: {PRICE_IN}, outputPerMillionTokens: {PRICE_OUT}, currency: EUR}}
"""
        + "".join(
            f"""\
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: {name}, namespace: default}}
spec:
  model: {name}
  backends: [{{name: upstream}}]
"""
            for name in ("chat", "embed-small", "secret-model")
        )
        + f"""\
---
apiVersion: routeway.dev/v1alpha1
kind: ModelClient
metadata: {{name: search-team, namespace: default}}
spec:
  keySecretRef: {{name: search-team-key, key: api-key}}
  models: [chat, "embed-*"]
  limits: {{requestsPerMinute: 600}}
---
apiVersion: v1
kind: Secret
metadata: {{name: search-team-key, namespace: default}}
stringData: {{api-key: {SEARCH_KEY}}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelClient
metadata: {{name: ops-team, namespace: default}}
spec:
  keySecretRef: {{name: ops-key, key: token}}
---
apiVersion: v1
kind: Secret
metadata: {{name: ops-key, namespace: default}}
stringData: {{token: {OPS_KEY}}}
"""
    )


async def start(launch: Launch, path: Path, *flags: str) -> Routeway:
    routeway = await launch("serve", "-f", str(path), *flags, workers=2)

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200  # both workers listening

    await eventually(ready, what="both workers ready")
    return routeway


def sdk(routeway: Routeway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{routeway.url}/v1", api_key=key, max_retries=0, timeout=10)


async def chat(routeway: Routeway, key: str, model: str = "chat") -> Any:
    async with sdk(routeway, key) as client:  # a fresh connection: the workers share them
        return await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


async def raw_chat(routeway: Routeway, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{routeway.url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        ) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def test_clients_keys_models_identity_cost_and_no_key_anywhere(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    (tmp_path / "m.yaml").write_text(manifests(upstream.url))
    routeway = await start(launch, tmp_path / "m.yaml")
    answers: list[bytes] = []

    # -- who gets in
    for _ in range(6):
        answer = await chat(routeway, SEARCH_KEY)
        assert answer.choices[0].message.content == "hi"
    assert (await chat(routeway, OPS_KEY, "secret-model")).choices
    assert (await chat(routeway, ADMIN_KEY, "secret-model")).choices  # the gateway key: every model
    status, _, body = await raw_chat(routeway, {"api-key": SEARCH_KEY})  # Azure-style clients
    assert status == 200, body
    assert all(seen["authorization"] is None for seen in upstream.seen)  # no client key upstream

    # -- who does not: 401 invalid_api_key, in the OpenAI shape
    refused = [
        {},
        {"Authorization": "Bearer sk-nobody"},
        {"Authorization": f"Bearer {SEARCH_KEY[:-1]}"},  # a prefix of a real key
        {"Authorization": f"Bearer {SEARCH_KEY}x"},  # a real key and more
        {"Authorization": f"Basic {SEARCH_KEY}"},  # not a Bearer token
        {"Authorization": "Bearer"},
        {"api-key": ""},
    ]
    for headers in refused:
        status, response_headers, body = await raw_chat(routeway, headers)
        assert status == 401, headers
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
        answers.append(body)
    with pytest.raises(openai.AuthenticationError) as unknown:
        await chat(routeway, "sk-unknown")
    assert unknown.value.code == "invalid_api_key"
    assert unknown.value.body["type"] == "invalid_request_error"  # type: ignore[index]

    # -- which models: 403 outside the list, served or not; 404 for an allowed name not served
    for model in ("secret-model", "no-such-model"):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await chat(routeway, SEARCH_KEY, model)
        assert denied.value.code == "model_not_allowed"
        assert denied.value.body["param"] == "model"  # type: ignore[index]
        assert model in denied.value.message
        answers.append(denied.value.response.content)
    with pytest.raises(openai.NotFoundError) as missing:
        await chat(routeway, SEARCH_KEY, "embed-large")
    assert missing.value.code == "model_not_found"
    listed = {}
    for key in KEYS:
        async with sdk(routeway, key) as client:
            listed[key] = sorted(m.id for m in (await client.models.list()).data)
    assert listed[SEARCH_KEY] == ["chat", "embed-small"]
    assert listed[OPS_KEY] == listed[ADMIN_KEY] == ["chat", "embed-small", "secret-model"]
    async with sdk(routeway, SEARCH_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.models.retrieve("secret-model")

    # -- identity and cost, summed over both workers
    search_requests = 6 + 1 + 3  # six chats, the api-key one, and the two 403s and the 404
    cost = 7 * (3 * PRICE_IN + 1 * PRICE_OUT) / 1_000_000

    async def usage_settled() -> Any:
        _, document = await routeway.get_admin("/usage")
        by_client = {c["client"]: c for c in document["clients"]}
        search = by_client["default/search-team"]
        return document if search["day"]["requests"] == search_requests else None

    document = await eventually(usage_settled, what="the search team's requests in /usage")
    by_client = {c["client"]: c for c in document["clients"]}
    assert sorted(by_client) == ["default/ops-team", "default/search-team"]
    search = by_client["default/search-team"]
    assert search["currency"] == "EUR"
    for window in ("minute", "day"):
        if search[window]["requests"] != search_requests:
            continue  # the minute turned between the requests and the read: the day still holds all
        assert (search[window]["promptTokens"], search[window]["completionTokens"]) == (21, 7)
        assert search[window]["cost"] == pytest.approx(cost)
        assert search[window]["costByCurrency"] == {"EUR": pytest.approx(cost)}
    assert search["day"]["start"].endswith("T00:00:00Z")
    assert by_client["default/ops-team"]["day"]["requests"] == 1

    _, metrics = await routeway.get_admin("/metrics")
    assert (
        'routeway_cost_total{backend="default/upstream",client="default/search-team",currency="EUR",'
        'route="default/chat"}'
    ) in metrics
    assert 'client="default/search-team",code="200",route="default/chat"}' in metrics
    assert 'client="default/search-team",code="403",route=""}' in metrics

    # -- the planted keys, anywhere they could leak
    documents = [metrics]
    for path in ("/config", "/routes", "/observations", "/usage"):
        status, found = await routeway.get_admin(path)
        assert status == 200, path
        documents.append(str(found))
    render = await asyncio.create_subprocess_exec(
        *routeway_command(),
        "render",
        "-f",
        str(tmp_path / "m.yaml"),
        "-o",
        "yaml",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await render.communicate()
    assert render.returncode == 0, err
    rendered = out.decode()
    documents += [rendered, err.decode()]
    await routeway.stop()
    documents.append(routeway.log())
    documents += [answer.decode() for answer in answers]
    for key in KEYS:
        assert sum(document.count(key) for document in documents) == 0, key
    assert "sha256:" not in rendered  # the ProxyConfig names references, not even hashes


async def test_a_key_edit_reaches_every_worker(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    """A rotated client key: the old one is refused and the new one accepted, by the group."""
    path = tmp_path / "m.yaml"
    path.write_text(manifests(upstream.url))
    routeway = await start(launch, path)
    assert (await chat(routeway, SEARCH_KEY)).choices
    path.write_text(manifests(upstream.url).replace(SEARCH_KEY, "sk-search-rotated-1"))

    async def rotated() -> bool:
        statuses = await asyncio.gather(
            *(raw_chat(routeway, {"Authorization": f"Bearer {SEARCH_KEY}"}) for _ in range(4))
        )
        return all(status == 401 for status, _, _ in statuses)

    await eventually(rotated, what="the old key refused by every worker")
    assert (await chat(routeway, "sk-search-rotated-1")).choices
