"""`routeway serve` with the client connection flags, over raw sockets.

Covers: `--header-timeout`, `--body-timeout` and `--idle-timeout` reach spawned workers (two
workers): a trickled request gets 408, an unfinished body 408, an idle connection is closed,
and the group's `/metrics` counts them; a request followed by `shutdown(SHUT_WR)` gets its
answer; a malformed header carrying a planted key gets 400 in the OpenAI shape and the key is in
no log line at debug level; `--max-connections` refuses the next connection with 503 while
the open ones are served; a bad flag value exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
from process_rig import Launch, Routeway, Upstream, eventually, manifest, routeway_command

WAIT = 10.0
KEY = "sk-planted-in-a-header-5be1"


async def connect(routeway: Routeway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", routeway.port)


def chat_request(body: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]})


async def answer_then_close(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the one answer, then the gateway's close (within WAIT)."""
    raw = await asyncio.wait_for(reader.read(), WAIT)  # until EOF: the answer must end in a close
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body)


async def test_serve_applies_the_connection_flags_in_every_worker(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch(
        "serve",
        "-f",
        str(path),
        "--header-timeout",
        "300ms",
        "--body-timeout",
        "300ms",
        "--idle-timeout",
        "300ms",
        "--log-level",
        "debug",
        workers=2,
    )

    async def workers_listening() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(workers_listening, within=60.0, what="both workers listening")

    # a request line trickled byte by byte
    reader, writer = await connect(routeway)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for byte in b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n" * 10:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    status, body = await answer_then_close(reader)
    sender.cancel()
    writer.close()
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # type: ignore[index]

    # a body announced and never sent
    reader, writer = await connect(routeway)
    writer.write(chat_request(CHAT)[:-10])
    status, body = await answer_then_close(reader)
    writer.close()
    assert status == 408

    # half-close after a whole request: the answer still comes
    reader, writer = await connect(routeway)
    writer.write(chat_request(CHAT))
    writer.write_eof()
    status, body = await answer_then_close(reader)
    writer.close()
    assert status == 200
    assert body["object"] == "chat.completion"

    # idle: closed without a byte
    reader, writer = await connect(routeway)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()

    # a malformed header with a key in it
    reader, writer = await connect(routeway)
    writer.write(
        b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + KEY.encode() + b"\x01\r\n\r\n"
    )
    status, body = await answer_then_close(reader)
    writer.close()
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]

    async def counted() -> bool:
        _, metrics = await routeway.get_admin("/metrics")
        lines = str(metrics).splitlines()
        return all(
            any(
                line.startswith(f'routeway_client_connections_closed_total{{reason="{reason}"}}')
                for line in lines
            )
            for reason in ("header_timeout", "body_timeout", "idle_timeout")
        )

    await eventually(counted, what="the closed connections counted in the group's /metrics")
    assert await routeway.stop() == 0
    log = routeway.log()
    assert KEY not in log
    assert "Traceback" not in log
    assert "malformed request from" in log


async def test_serve_refuses_connections_beyond_max_connections(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path), "--max-connections", "2")
    held = [await connect(routeway) for _ in range(2)]
    for _, writer in held:  # a first request makes sure each is accepted before the next
        writer.write(chat_request(CHAT))
    for reader, _ in held:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(
                v
                for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        await reader.readexactly(length)

    reader, writer = await connect(routeway)
    status, body = await answer_then_close(reader)
    writer.close()
    assert status == 503
    assert body["error"]["code"] == "too_many_connections"  # type: ignore[index]

    for reader, writer in held:  # still served
        writer.write(chat_request(CHAT))
        writer.write_eof()
        status, _ = await answer_then_close(reader)
        writer.close()
        assert status == 200
    assert await routeway.stop() == 0


async def test_a_bad_timeout_flag_is_a_usage_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *routeway_command(),
        "serve",
        "-f",
        str(tmp_path),
        "--header-timeout",
        "soon",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), WAIT * 3)
    assert proc.returncode == 2
    assert b"--header-timeout" in stderr
