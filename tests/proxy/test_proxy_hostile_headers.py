"""Malformed credentials and headers get a 4xx in the OpenAI shape, or are served, never a 500
(issue 14, item 1); sent as raw bytes, as an HTTP client would refuse to.

Matrix: Authorization with a byte that is not UTF-8 (alone, after a valid key), odd schemes,
whitespace, empty, a prefix or an extension of a valid key, 8 KB long; the same for
`api-key`; a second Authorization after a valid one — 401 with WWW-Authenticate, no upstream
call, the key never echoed; the accepted forms (scheme in any case, spaces around the token,
`api-key`) served. The headers the gateway reads past authentication, with bytes that are
not UTF-8: the sticky header (a plain route and a rollout split: served, and the same bytes
stick to the same arm), Cache-Control (on a cached route); X-Forwarded-For and any passed
header (passed on with U+FFFD for each such byte, as aiohttp cannot write it back);
Content-Type and Accept-Encoding (the gateway judges neither: served, the upstream asked for
identity). No ERROR record or traceback in any case (`proxy_fuzz.drain_log_problems`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from proxy_fuzz import KEY, Answer, Case, Target, check, drain_log_problems, fuzz_target, send
from routeway_proxy.headers import forwardable, header_bytes

from routeway.rollout.weights import arm_for_key, key_bucket

BEARER = b"Bearer " + KEY.encode()
CHAT = b'{"model":"gpt","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with fuzz_target() as started:
        yield started


async def call(target: Target, headers: list[tuple[bytes, bytes]], body: bytes = CHAT) -> Answer:
    case = Case(b"POST", b"/v1/chat/completions", tuple(headers), body)
    answer = await send(target, case)
    assert check(case, answer) == []
    assert drain_log_problems(target) == []
    return answer


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Authorization", b"Bearer \xe9")],
        [(b"Authorization", BEARER + b"\xe9")],
        [(b"Authorization", b"Bearer \xff\xfe" + KEY.encode())],
        [(b"Authorization", BEARER[:-1])],  # a prefix of the key
        [(b"Authorization", BEARER + b"0")],  # an extension of it
        [(b"Authorization", b"Basic " + KEY.encode())],
        [(b"Authorization", b"Bearer")],
        [(b"Authorization", b"")],
        [(b"Authorization", KEY.encode())],  # no scheme
        [(b"Authorization", b"Bearer\t" + KEY.encode())],  # the scheme ends at a space (RFC 9110 11.4)
        [(b"Authorization", BEARER + b" " + KEY.encode())],  # two tokens are not the key
        [(b"Authorization", b"Bearer " + b"k" * 8000)],
        [(b"api-key", b"\xe9")],
        [(b"api-key", KEY.encode()[:-1])],
        [(b"api-key", b"\xc3")],  # a truncated UTF-8 sequence
        [(b"Authorization", b"Bearer \xe9"), (b"api-key", KEY.encode()[1:])],
        [(b"Authorization", b"Bearer bad"), (b"Authorization", BEARER)],  # the first one counts
    ],
)
async def test_a_malformed_or_wrong_credential_is_401(
    target: Target, headers: list[tuple[bytes, bytes]]
) -> None:
    answer = await call(target, headers)
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="routeway"'
    assert orjson.loads(answer.body)["error"]["code"] == "invalid_api_key"
    assert target.upstream.received == 0  # refused before any work


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Authorization", BEARER)],
        [(b"Authorization", b"bearer " + KEY.encode())],  # the scheme is case-insensitive
        [(b"Authorization", b"Bearer  " + KEY.encode() + b"  ")],  # whitespace around the token
        [(b"api-key", KEY.encode())],
        [(b"Authorization", BEARER), (b"Authorization", b"Bearer \xe9")],
    ],
)
async def test_a_valid_key_in_any_accepted_form_is_served(
    target: Target, headers: list[tuple[bytes, bytes]]
) -> None:
    assert (await call(target, headers)).status == 200


@pytest.mark.parametrize("model", [b"gpt", b"canary"])
async def test_a_sticky_header_that_is_not_utf8_sticks(target: Target, model: bytes) -> None:
    body = CHAT.replace(b'"gpt"', b'"' + model + b'"')
    arms = set()
    for _ in range(4):
        answer = await call(target, [(b"Authorization", BEARER), (b"x-session", b"user-\xe9\xff")], body)
        assert answer.status == 200
        arms.add(answer.headers.get("x-routeway-arm"))
    assert len(arms) == 1  # the same bytes, the same arm every time
    if model == b"canary":
        assert arms <= {"stable", "canary"}


def test_sticky_keys_hash_the_bytes_that_were_sent() -> None:
    """aiohttp hands a non-UTF-8 header over surrogate-escaped: its hash is that of the bytes,
    and a valid UTF-8 value hashes as before (no sticky assignment moves)."""
    escaped = b"user-\xe9".decode("utf-8", "surrogateescape")
    assert header_bytes(escaped) == b"user-\xe9"
    assert header_bytes("usér") == "usér".encode()
    assert key_bucket(escaped) != key_bucket("user-")
    assert arm_for_key(escaped, 100.0) == "canary" and arm_for_key(escaped, 0.0) == "stable"


@pytest.mark.parametrize(
    "header",
    [
        (b"Cache-Control", b"max-age=\xe9, no-store"),
        (b"Cache-Control", b"\xff"),
        (b"Cache-Control", b"no-cache=" + b"x" * 7000),
        (b"Content-Type", b"application/json; charset=\xe9"),
        (b"Content-Type", b"text/plain"),
        (b"Accept-Encoding", b"\xe9;q=2"),
        (b"X-Forwarded-Proto", b"\xe9"),
        (b"OpenAI-Organization", b"org-\xe9"),
    ],
)
@pytest.mark.parametrize("model", [b"gpt", b"cached"])
async def test_odd_headers_the_gateway_reads_or_passes_are_served(
    target: Target, header: tuple[bytes, bytes], model: bytes
) -> None:
    body = CHAT.replace(b'"gpt"', b'"' + model + b'"')
    answer = await call(target, [(b"Authorization", BEARER), header], body)
    assert answer.status == 200
    assert (b"accept-encoding", b"identity") in [(n.lower(), v) for n, v in target.upstream.last_headers]


@pytest.mark.parametrize("name", [b"X-Forwarded-For", b"OpenAI-Organization"])
async def test_a_header_that_is_not_utf8_is_passed_on_with_replacement_characters(
    target: Target, name: bytes
) -> None:
    """aiohttp cannot write the bytes back: each one becomes U+FFFD, visibly, in every build."""
    answer = await call(target, [(b"Authorization", BEARER), (name, b"10.0.0.\xe9 caf\xc3\xa9")])
    assert answer.status == 200
    sent = [v for n, v in target.upstream.last_headers if n.lower() == name.lower()]
    suffix = b", 127.0.0.1" if name == b"X-Forwarded-For" else b""
    assert sent == ["10.0.0.\ufffd café".encode() + suffix]


def test_forwardable_keeps_valid_values() -> None:
    assert forwardable("café ☕") == "café ☕"
    assert forwardable(b"a\xe9\xff".decode("utf-8", "surrogateescape")) == "a\ufffd\ufffd"
