"""A real `redis-server` on 127.0.0.1 for tests (Debian's package; scripts/test installs it).

Not optional: a machine without redis-server fails the tests that need one rather than
skipping them, so CI cannot pass without having run them. Each server is its own process on
a free port with no persistence, so a test may stop, pause or kill it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `url` for clients, `kill`/`pause`/`resume` for failure tests."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            pytest.fail(
                "redis-server is not installed (apt-get install redis-server; scripts/test does it as root)"
            )
        self._binary = binary
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="routeway-redis-")
        self.start()

    def start(self) -> None:
        """Start the server (again, after `kill`: same port, empty data)."""
        self.process = subprocess.Popen(
            [
                self._binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):  # up to ~5 s for a cold start; a poll for readiness, not a timing claim
            if ping(self.port):
                break
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.01)
        else:
            self.stop()
            pytest.fail("redis-server did not answer PING")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
