"""Requests aiohttp's parser refuses, over raw sockets: OpenAI-shaped answers, quiet logs.

Matrix:
- malformed header bytes (a control byte after a planted client key, in a value, in a name;
  a NUL; a bare CR) → 400 in the OpenAI shape, closed; the key appears neither in the answer
  nor in any log record at any level;
- smuggling forms (Content-Length with Transfer-Encoding, two different Content-Lengths,
  obs-fold, a chunked body with broken framing) → 400, closed, nothing reaches the upstream;
- an over-long header line or request line, too many header fields → 431; non-HTTP bytes (TLS) → 400;
- `Expect`: `100-continue` gets 100 then the answer; anything else 417 without its value;
- targets no route pattern can match (`OPTIONS *`, `CONNECT host:port`) → the OpenAI 404;
- a body whose Content-Encoding cannot be decoded, read by a handler or left unread → 400 or
  the 404, with no traceback and no upstream call;
- many malformed requests → at most the burst of log lines, and no traceback; after the
  window the log resumes and says how many lines it left out.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from conn_rig import ConnGateway, closed_by_peer, conn_gateway, read_answer, request_bytes, serve_ok
from proxy_helpers import Upstream
from routeway_proxy.client_conn import ConnectionLimits
from routeway_proxy.client_errors import MALFORMED_LOG_BURST, MalformedRequestLog

LIMITS = ConnectionLimits(header_timeout=10, body_timeout=10, idle_timeout=10, max_per_worker=64)
KEY = "sk-planted-client-key-7f3a9c"


async def exchange(gateway: ConnGateway, raw: bytes) -> tuple[int, dict[str, str | None], bytes]:
    """Send `raw`, read the one answer and the close that must follow it."""
    reader, writer = await gateway.connect()
    writer.write(raw)
    answer = await read_answer(reader)
    error = answer.error()
    assert await closed_by_peer(reader) == b""
    writer.close()
    return answer.status, error, answer.body


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


MALFORMED_HEADERS = {
    "control byte after a key": head(
        b"GET /v1/models HTTP/1.1", b"Host: gw", b"Authorization: Bearer " + KEY.encode() + b"\x01"
    ),
    "NUL in a value": head(b"GET /v1/models HTTP/1.1", b"Host: gw", b"X-Key: " + KEY.encode() + b"\x00x"),
    "control byte in a name": head(b"GET /v1/models HTTP/1.1", b"Host: gw", b"X-K\x01ey: " + KEY.encode()),
    "bare CR in a value": head(
        b"GET /v1/models HTTP/1.1", b"Host: gw", b"X-Key: " + KEY.encode() + b"\rX: y"
    ),
    "space before the colon": head(
        b"GET /v1/models HTTP/1.1", b"Host: gw", b"Authorization : " + KEY.encode()
    ),
    "key in the request target": head(b"GET /v1/models?k=" + KEY.encode() + b"\x7f HTTP/1.1", b"Host: gw"),
}


@pytest.mark.parametrize("raw", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
async def test_malformed_header_bytes_get_400_and_never_echo_or_log_the_key(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with conn_gateway(LIMITS) as gw:
        status, error, body = await exchange(gw, raw)
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "malformed_request"
    assert KEY.encode() not in body
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    for record in caplog.records:
        text = record.getMessage() + str(record.exc_info or "") + str(record.args or "")
        assert KEY not in text, record
        assert "planted" not in text, record


SMUGGLING = {
    "CL and TE": head(
        b"POST /v1/chat/completions HTTP/1.1",
        b"Host: gw",
        b"Content-Length: 4",
        b"Transfer-Encoding: chunked",
    )
    + b"0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n",
    "two Content-Lengths": head(
        b"POST /v1/chat/completions HTTP/1.1", b"Host: gw", b"Content-Length: 2", b"Content-Length: 40"
    )
    + b"{}",
    "obs-fold": head(b"GET /v1/models HTTP/1.1", b"Host: gw", b"X-A: one", b" folded: two"),
    "TE not chunked last": head(
        b"POST /v1/chat/completions HTTP/1.1", b"Host: gw", b"Transfer-Encoding: chunked, identity"
    )
    + b"2\r\n{}\r\n0\r\n\r\n",
    "broken chunk size": head(
        b"POST /v1/chat/completions HTTP/1.1", b"Host: gw", b"Transfer-Encoding: chunked"
    )
    + b"zz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("raw", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_smuggling_forms_get_400_and_reach_no_upstream(raw: bytes, upstream: Upstream) -> None:
    async with conn_gateway(LIMITS) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        writer.write(raw)
        answer = await read_answer(reader)
        assert answer.status == 400, answer
        assert answer.error()["code"] == "malformed_request"
        assert await closed_by_peer(reader) == b""  # nothing smuggled behind it is answered
        writer.close()
    assert upstream.seen == []


async def test_an_over_long_line_or_too_many_headers_get_431() -> None:
    async with conn_gateway(LIMITS) as gw:
        status, error, _ = await exchange(
            gw, head(b"GET /v1/models HTTP/1.1", b"Host: gw", b"X-Big: " + b"a" * 20000)
        )
        assert status == 431
        assert error["code"] == "request_header_too_large"
        status, _, _ = await exchange(gw, head(b"GET /" + b"a" * 20000 + b" HTTP/1.1", b"Host: gw"))
        assert status == 431
        many = [b"X-%d: a" % i for i in range(300)]
        status, error, _ = await exchange(gw, head(b"GET /v1/models HTTP/1.1", b"Host: gw", *many))
        assert status == 431
        assert error["code"] == "request_header_too_large"


async def test_tls_bytes_on_the_plain_port_get_400(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    async with conn_gateway(LIMITS) as gw:
        status, error, _ = await exchange(gw, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    assert status == 400
    assert error["code"] == "malformed_request"
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "malformed" in r.getMessage()]


async def test_expect_100_continue_is_honoured_and_other_expectations_get_417(upstream: Upstream) -> None:
    async with conn_gateway(LIMITS) as gw:
        serve_ok(gw, upstream)
        reader, writer = await gw.connect()
        body = b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}'
        writer.write(
            request_bytes(
                "/v1/chat/completions", method="POST", headers={"Expect": "100-continue"}, body=b""
            ).replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        assert (await read_answer(reader)).status == 200
        writer.close()

        secret = "x-" + KEY
        status, error, raw = await exchange(gw, request_bytes(headers={"Expect": secret}))
        assert status == 417
        assert error["code"] == "expectation_failed"
        assert secret.encode() not in raw


async def test_malformed_requests_are_logged_within_the_burst_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with conn_gateway(LIMITS) as gw:
        await asyncio.gather(
            *(
                exchange(gw, MALFORMED_HEADERS["control byte after a key"])
                for _ in range(3 * MALFORMED_LOG_BURST)
            )
        )
    lines = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(lines) == MALFORMED_LOG_BURST
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert [r for r in caplog.records if r.exc_info] == []


def test_the_malformed_request_log_resumes_after_its_window_and_says_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    now = [0.0]
    malformed = MalformedRequestLog(window=60.0, burst=2, clock=lambda: now[0])
    for _ in range(5):
        malformed.note(logging.INFO, "a header is malformed (InvalidHeader)", 400, "10.0.0.1")
    assert len(caplog.records) == 2
    now[0] = 59.0
    malformed.note(logging.INFO, "a header is malformed (InvalidHeader)", 400, "10.0.0.1")
    assert len(caplog.records) == 2  # still the same window
    now[0] = 60.0
    malformed.note(logging.INFO, "a header is malformed (InvalidHeader)", 400, "10.0.0.1")
    assert len(caplog.records) == 3
    assert "4 more left out" in caplog.records[-1].getMessage()
    assert "10.0.0.1" in caplog.records[-1].getMessage()
    malformed.note(logging.INFO, "a header is malformed (InvalidHeader)", 400, "10.0.0.1")
    assert len(caplog.records) == 4
    assert "left out" not in caplog.records[-1].getMessage()  # counted once, then reset


@pytest.mark.parametrize("target", [b"OPTIONS * HTTP/1.1", b"CONNECT upstream.example:443 HTTP/1.1"])
async def test_targets_no_route_can_match_get_the_openai_404(target: bytes) -> None:
    async with conn_gateway(LIMITS) as gw:
        reader, writer = await gw.connect()
        writer.write(head(target, b"Host: gw"))
        answer = await read_answer(reader)
        writer.close()
    assert answer.status == 404
    assert answer.error()["code"] == "not_found"


UNDECODABLE = {
    "read by the handler": b"POST /v1/chat/completions HTTP/1.1",
    "left unread (unknown path)": b"POST /v1/nothing-here HTTP/1.1",
}


@pytest.mark.parametrize("line", UNDECODABLE.values(), ids=UNDECODABLE.keys())
async def test_an_undecodable_body_gets_a_4xx_and_no_traceback(
    line: bytes, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with conn_gateway(LIMITS) as gw:
        serve_ok(gw, upstream)
        raw = head(line, b"Host: gw", b"Content-Encoding: gzip", b"Content-Length: 10") + b"not gzip!!"
        status, error, _ = await exchange(gw, raw)
    assert status in (400, 404)
    assert error["code"] == ("invalid_body" if status == 400 else "not_found")
    assert upstream.seen == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
