"""What the client gets for an upstream error status whose body is not an OpenAI error, and for
an upstream redirect, through the real gateway.

Matrix: a 400 and a 500 with a JSON body that is no OpenAI error (it echoes the upstream's
credential) → wrapped in the OpenAI shape with the same status, naming backend, status, media
type and size, never quoting the body; a 400 in the OpenAI error shape → relayed word for
word; a 302 (and a 307) → `502 upstream_error` naming the status, with no `Location` and
nothing of the body, the redirect never followed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from proxy_helpers import Gateway, make_backend, make_config, make_route

SECRET = "sk-upstream-secret-echoed-back"
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
OPENAI_ERROR = {
    "error": {"message": "bad model", "type": "invalid_request_error", "param": None, "code": "x"}
}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        kind = request.match_info["kind"]
        if kind.startswith("json-"):
            document = {"detail": "denied", "echo": {"authorization": f"Bearer {SECRET}"}}
            return web.json_response(document, status=int(kind[5:]))
        if kind == "openai-400":
            return web.json_response(OPENAI_ERROR, status=400)
        return web.Response(
            status=int(kind[9:]),  # "redirect-302"
            headers={"Location": f"http://elsewhere.invalid/?key={SECRET}"},
            text=f"moved; key {SECRET}",
        )

    app = web.Application()
    app.router.add_route("*", "/{kind}/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def call(gateway: Gateway, base: str, kind: str) -> tuple[int, dict[str, str], bytes]:
    backend = make_backend("a", f"{base}/{kind}/v1")
    gateway.runtime.apply(make_config([backend], [make_route("gpt", [("a", 1)])]), {})
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json=CHAT, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def openai_error(body: bytes) -> dict[str, object]:
    document = orjson.loads(body)
    assert set(document) == {"error"} and set(document["error"]) == {"message", "type", "param", "code"}
    error = document["error"]
    assert isinstance(error, dict)
    return error


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_a_json_error_that_is_no_openai_error_is_wrapped(
    gateway: Gateway, upstream: tuple[str, list[str]], status: int
) -> None:
    base, _ = upstream
    got, _, body = await call(gateway, base, f"json-{status}")
    assert got == status
    assert SECRET.encode() not in body and b"denied" not in body
    error = openai_error(body)
    assert error["code"] == "upstream_error"
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    message = str(error["message"])
    assert (
        "ns/a" in message and str(status) in message and "application/json" in message and "bytes" in message
    )


async def test_an_openai_error_is_relayed_as_it_is(gateway: Gateway, upstream: tuple[str, list[str]]) -> None:
    base, _ = upstream
    got, _, body = await call(gateway, base, "openai-400")
    assert (got, orjson.loads(body)) == (400, OPENAI_ERROR)


@pytest.mark.parametrize("status", [302, 307])
async def test_a_redirect_is_answered_502_and_never_followed(
    gateway: Gateway, upstream: tuple[str, list[str]], status: int
) -> None:
    base, seen = upstream
    got, headers, body = await call(gateway, base, f"redirect-{status}")
    assert got == 502
    assert "Location" not in headers and SECRET.encode() not in body
    error = openai_error(body)
    assert error["code"] == "upstream_error"
    assert f"answered {status}" in str(error["message"]) and "redirect" in str(error["message"])
    assert seen == [f"/redirect-{status}/v1/chat/completions"]  # asked once, not followed
