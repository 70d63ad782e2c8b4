"""Planted keys, everywhere `routeway serve` writes or answers (issue 14, "Prove it").

One upstream key (a ModelBackend's `apiKeySecretRef` value), one ModelClient key and one
gateway `auth` key, each in a second version after a rotation, are searched for in every form
a careless line could carry them — as they are, their distinctive middle, base64 (standard
and URL-safe), URL-encoded, hex, JSON-escaped and their SHA-256 hex (no hash of a client key
belongs anywhere `serve` shows: its credential store is in memory) — across:

- the whole output of `routeway serve --workers 2 --log-level debug --access-log` (the root
  logger at DEBUG: aiohttp's access, server, client and web loggers and asyncio's included);
- `/metrics`, `/config`, `/routes`, `/observations`, `/usage`, `/rollouts`, a rollout's own
  document and the answer to a rollout action, `/healthz`, `/readyz` and an unknown admin path;
- `routeway render` (json and yaml) and `routeway validate`, on good files and broken ones;
- every answer the gateway makes itself: 401 (no key, a prefix or an extension of a real
  key, `Basic`, `api-key`, a key in the query string, a key followed by a control byte or a
  non-UTF-8 byte on a raw socket), 403, 404, 400, 405, 429, 502 (an upstream that resets),
  a wrapped non-JSON upstream 500, and the ends of streams;

- every request an upstream received: the upstream key as `Authorization`, no client or
  gateway key in any header but the `x-api-key` the client itself chose to send;

while it serves JSON and streamed answers (a stream dropped mid-way too), a rate-limited and
a cached route, a rollout started by an edit and promoted, a key rotation, a save that breaks
a Secret (rejected; the last good config keeps serving) and a translation finding.

A hostile upstream reflects the request's `Authorization` (the upstream key the gateway sent)
and an `x-api-key` the client chose to send (its own key: headers other than `Authorization`
and `api-key` are the client's to forward) into its error bodies and a response header. The
gateway relays such an upstream answer to the caller unchanged (SECURITY.md: what an upstream
says is the upstream's business), so those relayed answers are the one place the keys may be
— and the test checks they really were there, so the reflection went through the gateway's
hands — while its log, metrics and admin documents stay clean.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import openai
import pytest
from aiohttp import web
from key_search import find_leaks, forms, planted
from process_rig import Launch, Routeway, eventually, routeway_command, write_atomically

UPSTREAM_KEYS = (planted("upone"), planted("uptwo"))
CLIENT_KEYS = (planted("clone"), planted("cltwo"))
GATEWAY_KEYS = (planted("gwone"), planted("gwtwo"))
TWIN_KEY = planted("twin")  # claimed by two ModelClients: authenticates neither, and is logged about
ALL_KEYS = (*UPSTREAM_KEYS, *CLIENT_KEYS, *GATEWAY_KEYS, TWIN_KEY)


def leaks(documents: dict[str, str]) -> list[tuple[str, str, str]]:
    """(where, which key, which form) for every planted key found in any form."""
    return find_leaks(documents, ALL_KEYS)


def test_the_search_finds_each_form() -> None:
    """The search itself: each form of a key, and a key inside a longer line, is found."""
    key = CLIENT_KEYS[0]
    for form, value in forms(key).items():
        assert ("doc", key, form) in leaks({"doc": f"x {value.upper() if form == 'hex' else value} y"})
    assert leaks({"doc": "nothing planted here"}) == []


# --- a hostile upstream ---------------------------------------------------------------------


SEEN_UPSTREAM: list[dict[str, str]] = []  # the headers of every request an upstream received


@web.middleware
async def record(request: web.Request, handler: Any) -> web.StreamResponse:
    SEEN_UPSTREAM.append(dict(request.headers))
    response: web.StreamResponse = await handler(request)
    return response


async def good(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") not in {f"Bearer {k}" for k in UPSTREAM_KEYS}:
        return web.json_response({"error": {"message": "bad key", "type": "auth", "code": None}}, status=401)
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        for word in ("one ", "two ", "three"):
            delta = {"index": 0, "delta": {"content": word}, "finish_reason": None}
            event = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [delta],
            }
            await response.write(b"data: " + web.json_response(event).body + b"\n\n")  # type: ignore[operator]
            await asyncio.sleep(0.05)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:
        pass  # a client that left mid-stream
    return response


async def echo(request: web.Request) -> web.Response:
    """Reflects the credential it was sent, and the client's own header, as a careless
    upstream (a debugging proxy, a misconfigured server) would."""
    await request.read()
    auth = request.headers.get("Authorization", "")
    client_header = request.headers.get("x-api-key", "")
    status = int(request.headers.get("x-echo-status", "401"))
    headers = {"x-echo-authorization": auth, "x-echo-api-key": client_header}
    if status == 500:
        return web.Response(status=500, text=f"crashed with {auth} and {client_header}", headers=headers)
    message = f"rejected {auth}; you sent x-api-key {client_header}"
    error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return web.json_response(error, status=status, headers=headers)


async def reset(request: web.Request) -> web.Response:
    await request.read()
    assert request.transport is not None
    request.transport.abort()
    raise web.HTTPInternalServerError


@pytest.fixture
async def hostile() -> Any:
    SEEN_UPSTREAM.clear()
    app = web.Application(middlewares=[record])
    app.router.add_post("/good/v1/chat/completions", good)
    app.router.add_post("/echo/v1/chat/completions", echo)
    app.router.add_post("/reset/v1/chat/completions", reset)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}"
    await runner.cleanup()


# --- the files ----------------------------------------------------------------------------


def manifests(upstream: str, version: int = 0, *, canary_version: str = "v1", broken: str = "") -> str:
    def backend(name: str, path: str, extra: str = "") -> str:
        return (
            f"---\napiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  provider: openai\n  url: {upstream}/{path}/v1\n  model: m\n"
            f"  apiKeySecretRef: {{name: upstream-key, key: api-key}}\n{extra}"
        )

    def route(name: str, backend: str, extra: str = "") -> str:
        return (
            f"---\napiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  model: {name}\n  backends: [{{name: {backend}}}]\n{extra}"
        )

    def secret(name: str, values: str) -> str:
        return (
            f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n{values}\n"
        )

    upstream_secret = broken or f"stringData: {{api-key: '{UPSTREAM_KEYS[version]}'}}"
    return "".join(
        [
            "apiVersion: routeway.dev/v1alpha1\nkind: ModelGateway\nmetadata: {name: default, namespace: default}\n"
            "spec:\n  auth: {apiKeySecretRef: {name: gateway-keys}}\n",
            secret("gateway-keys", f"stringData: {{ops: '{GATEWAY_KEYS[version]}'}}"),
            secret("upstream-key", upstream_secret),
            secret("client-key", f"stringData: {{key: '{CLIENT_KEYS[version]}'}}"),
            "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelClient\nmetadata: {name: team, namespace: default}\n"
            "spec:\n  keySecretRef: {name: client-key, key: key}\n"
            "  models: [chat, echo, reset, limited, cached, canary]\n",
            secret("twin-keys", f"stringData: {{a: '{TWIN_KEY}', b: '{TWIN_KEY}'}}"),
            *(
                "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelClient\n"
                f"metadata: {{name: twin-{k}, namespace: default}}\nspec:\n  keySecretRef: {{name: twin-keys, key: {k}}}\n"
                for k in ("a", "b")
            ),
            "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelClient\nmetadata: {name: keyless, namespace: default}\n"
            "spec:\n  keySecretRef: {name: client-key, key: no-such-key}\n",  # a translation finding
            backend("good", "good"),
            backend("echo", "echo", "  outlierDetection: {consecutiveFailures: 1000}\n"),
            backend("reset", "reset"),
            backend("canary", "good", f"  version: {canary_version}\n"),
            route("chat", "good"),
            route("secret", "good"),
            route("echo", "echo", "  retries: {attempts: 2, backoff: 1ms}\n"),
            route("reset", "reset", "  retries: {attempts: 1}\n"),
            route("limited", "good", "  limits: {requestsPerMinute: 2}\n"),
            route("cached", "good", "  cache: {ttl: 1m}\n"),
            route("canary", "canary", "  strategy: {canary: {steps: [{setWeight: 50}, {pause: {}}]}}\n"),
        ]
    )


# --- the requests -------------------------------------------------------------------------


async def post(
    routeway: Routeway,
    model: str,
    headers: dict[str, str],
    *,
    path: str = "/v1/chat/completions",
    **extra: Any,
) -> tuple[int, dict[str, str], bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{routeway.url}{path}", json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def raw_request(routeway: Routeway, head: bytes) -> bytes:
    """A request written byte by byte as given (aiohttp's client refuses invalid headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", routeway.port)
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
    writer.write(
        head
        + b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return answer


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def traffic(routeway: Routeway, version: int, made: list[bytes], relayed: list[str]) -> None:
    """Every kind of answer once, with the keys of `version`; the gateway's own answers go to
    `made`, the hostile upstream's relayed ones (status, headers and body) to `relayed`."""
    client, gateway = CLIENT_KEYS[version], GATEWAY_KEYS[version]
    async with openai.AsyncOpenAI(base_url=f"{routeway.url}/v1", api_key=client, max_retries=0) as sdk:
        answer = await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "hi"
        stream = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert (
            "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "one two three"
        )
        for _ in range(2):
            assert (
                await sdk.chat.completions.create(model="cached", messages=[{"role": "user", "content": "c"}])
            ).choices
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await sdk.chat.completions.create(model="secret", messages=[{"role": "user", "content": "hi"}])
        made.append(denied.value.response.content)
    async with openai.AsyncOpenAI(base_url=f"{routeway.url}/v1", api_key=gateway, max_retries=0) as sdk:
        assert (
            await sdk.chat.completions.create(model="secret", messages=[{"role": "user", "content": "hi"}])
        ).choices
        assert [m.id async for m in sdk.models.list()]

    assert (await post(routeway, "chat", {"api-key": client}))[0] == 200  # Azure-style clients

    # a stream the client drops after its first event
    async with aiohttp.ClientSession() as session:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with session.post(
            f"{routeway.url}/v1/chat/completions", json=body, headers=bearer(client)
        ) as r:
            assert r.status == 200
            await r.content.readline()

    refused = [
        {},
        bearer("sk-nobody"),
        bearer(client[:-1]),
        bearer(client + "x"),
        bearer(gateway + " " + client),
        {"Authorization": f"Basic {base64.b64encode(f'user:{client}x'.encode()).decode()}"},
        {"api-key": client + "x"},
        bearer(TWIN_KEY),
    ]
    for headers in refused:
        status, _, body = await post(routeway, "chat", headers)
        assert status == 401, headers
        made.append(body)
    status, _, body = await post(routeway, "chat", {}, path=f"/v1/chat/completions?api_key={quote(client)}")
    assert status == 401
    made.append(body)

    expected = [
        ("no-such-model", bearer(gateway), {}, 404),
        ("chat", bearer(client), {"messages": "not a list"}, 400),
        ("reset", bearer(client), {}, 502),
    ]
    for model, headers, extra, code in expected:
        status, _, body = await post(routeway, model, headers, **extra)
        assert status == code, (model, status, body)
        made.append(body)
    limited = [await post(routeway, "limited", bearer(client)) for _ in range(4)]
    assert [status for status, _, _ in limited].count(429) >= 1
    made += [body for status, _, body in limited if status == 429]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{routeway.url}/v1/chat/completions", headers=bearer(client)) as r,
    ):
        assert r.status == 405
        made.append(await r.read())

    # the hostile upstream: 401 and 503 (retried, then relayed) are its own words; its
    # non-JSON 500 is replaced by the gateway's own error
    for code in (401, 503):
        status, headers, body = await post(
            routeway, "echo", {**bearer(client), "x-api-key": client, "x-echo-status": str(code)}
        )
        assert status == code
        relayed.append(f"{status} {headers} {body.decode()}")
    status, _, body = await post(
        routeway, "echo", {**bearer(client), "x-api-key": client, "x-echo-status": "500"}
    )
    assert status == 500
    made.append(body)


async def admin_documents(routeway: Routeway, prefix: str) -> dict[str, str]:
    paths = (
        "/metrics",
        "/config",
        "/routes",
        "/observations",
        "/usage",
        "/rollouts",
        "/rollouts/default/canary",
    )
    documents = {}
    for path in (*paths, "/healthz", "/readyz", "/no-such-admin-path"):
        status, document = await routeway.get_admin(path)
        assert status == (404 if path.startswith("/no-such") else 200), (path, document)
        documents[f"{prefix} admin {path}"] = str(document)
    return documents


async def run_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *routeway_command(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return f"exit {proc.returncode}\n{out.decode()}\n{err.decode()}"


async def test_planted_keys_found_nowhere(tmp_path: Path, launch: Launch, hostile: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(manifests(hostile))
    routeway = await launch("serve", "-f", str(path), "--log-level", "debug", "--access-log", workers=2)
    await eventually(lambda: _ready(routeway), what="both workers ready")
    made: list[bytes] = []
    relayed: list[str] = []
    documents: dict[str, str] = {}

    await traffic(routeway, 0, made, relayed)
    documents |= await admin_documents(routeway, "first")
    documents["render json"] = await run_cli("render", "-f", str(path), "-o", "json")
    documents["render yaml"] = await run_cli("render", "-f", str(path), "-o", "yaml")
    documents["validate"] = await run_cli("validate", "-f", str(path))
    assert documents["validate"].startswith("exit 1") and "no-such-key" in documents["validate"]

    # rotate every key and change the canary route's backend: a rollout starts
    write_atomically(path, manifests(hostile, 1, canary_version="v2"))

    async def rotated() -> bool:  # by both workers: each of several fresh connections is accepted
        answers = await asyncio.gather(*(post(routeway, "chat", bearer(CLIENT_KEYS[1])) for _ in range(6)))
        return all(status == 200 for status, _, _ in answers)

    await eventually(rotated, what="the rotated client key accepted")
    await eventually(lambda: _rollout_started(routeway), what="the canary's rollout")
    async with routeway.session.post(f"{routeway.admin}/rollouts/default/canary/promote-full") as r:
        documents["rollout action"] = f"{r.status} {await r.text()}"
        assert r.status == 200, documents["rollout action"]

    async def promoted() -> bool:
        _, document = await routeway.get_admin("/rollouts/default/canary")
        return document.get("canaryRevision") is None and len(document["history"]) == 2

    await eventually(promoted, what="the canary promoted")
    await traffic(routeway, 1, made, relayed)
    documents |= await admin_documents(routeway, "rotated")

    # saves that break the upstream key's Secret: reported at /routes (the whole save rejected,
    # or only that Secret's last good version kept), and the route keeps serving
    for broken, message in (
        (f"data: {{api-key: '{UPSTREAM_KEYS[1]}'}}", "not valid base64"),
        (f"stringData: {{api-key: ['{UPSTREAM_KEYS[1]}']}}", "Input should be a valid string"),
    ):
        write_atomically(path, manifests(hostile, 1, broken=broken))
        documents[f"validate {message}"] = await run_cli("validate", "-f", str(path))
        documents[f"render {message}"] = await run_cli("render", "-f", str(path))
        assert (
            documents[f"validate {message}"].startswith("exit 1")
            and message in documents[f"validate {message}"]
        )

        async def reported(message: str = message) -> Any:
            return message in str((await routeway.get_admin("/routes"))[1])

        await eventually(reported, what=f"/routes reporting {message!r}")
        assert (await post(routeway, "chat", bearer(CLIENT_KEYS[1])))[0] == 200
    documents |= await admin_documents(routeway, "rejected")

    assert await routeway.stop() == 0
    log = routeway.log()
    assert " DEBUG " in log and '"status":401' in log  # DEBUG lines and access lines were written
    assert "one key is claimed by" in log  # the twins' shared key was logged about, by name only
    documents["log"] = log
    documents |= {f"gateway answer {i}": body.decode(errors="replace") for i, body in enumerate(made)}
    assert leaks(documents) == []
    # upstreams got the upstream key as Authorization, and a client key only where the client
    # itself put one (x-api-key, which the gateway forwards like any header of the client's)
    assert len(SEEN_UPSTREAM) > 20
    upstream_headers = {
        f"upstream request {i}": str({k: v for k, v in headers.items() if k.lower() != "x-api-key"})
        for i, headers in enumerate(SEEN_UPSTREAM)
    }
    assert all(h.get("Authorization") in {f"Bearer {k}" for k in UPSTREAM_KEYS} for h in SEEN_UPSTREAM)
    assert [leak for leak in leaks(upstream_headers) if leak[1] not in UPSTREAM_KEYS] == []
    # the hostile upstream did reflect both keys, and the gateway relayed them unchanged
    assert all(UPSTREAM_KEYS[0] in text or UPSTREAM_KEYS[1] in text for text in relayed)
    assert all(CLIENT_KEYS[0] in text or CLIENT_KEYS[1] in text for text in relayed)


async def _ready(routeway: Routeway) -> bool:
    return (await routeway.get_admin("/readyz"))[0] == 200


async def _rollout_started(routeway: Routeway) -> Any:
    status, document = await routeway.get_admin("/rollouts/default/canary")
    return (status, document) if status == 200 and document.get("canaryRevision") else None


async def test_a_malformed_header_around_a_key_is_neither_echoed_nor_logged(
    tmp_path: Path, launch: Launch, hostile: str
) -> None:
    """A valid key followed by a control byte or a non-UTF-8 byte (issue 14, found 1 and 6):
    refused with a 4xx before any work, in the OpenAI error shape, and the header's value in
    neither the answer nor the DEBUG log."""
    path = tmp_path / "m.yaml"
    path.write_text(manifests(hostile))
    routeway = await launch("serve", "-f", str(path), "--log-level", "debug", "--access-log", workers=2)
    await eventually(lambda: _ready(routeway), what="both workers ready")
    documents = {}
    for i, tail in enumerate((b"\x01", b"\xe9", b"\x7f", b"\r")):
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        answer = await raw_request(routeway, head + CLIENT_KEYS[0].encode() + tail + b"\r\n")
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1].startswith(b"4"), answer[:300]
        assert b'{"error":' in rest.replace(b" ", b""), answer[:300]
        documents[f"answer {i}"] = answer.decode(errors="replace")
    assert await routeway.stop() == 0
    documents["log"] = routeway.log()
    assert leaks(documents) == []
