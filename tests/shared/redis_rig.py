"""A real `redis-server` on 127.0.0.1 for tests: started on a free port, killed at the end.

Why a real server: the shared cache tier's contract is about what happens on the wire —
PX expiry, a refused connection, a server that stops answering — which a fake would only
restate. Debian's `redis-server` is installed by `scripts/test`; without it the fixture
fails (a missing server is a broken machine, not a reason to skip).

`RedisRig` can `kill()` the server (connections refused from then on), `freeze()` and
`thaw()` it (SIGSTOP/SIGCONT: connections accepted, nothing answered — a hung Redis), and
`start()` it again on the same port.
"""

from __future__ import annotations

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


class RedisRig:
    def __init__(self, binary: str, directory: str) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "save": "",
            "appendonly": "no",
            "dir": self.directory,
        }
        argv = [self.binary]
        for name, value in options.items():
            argv += ["--" + name, value]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, attempts: int = 500) -> None:
        """Until the server answers PING (a readiness poll, not a timing assertion)."""
        for _ in range(attempts):
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer PING")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_rig() -> Iterator[RedisRig]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/test installs Debian's package)")
    with tempfile.TemporaryDirectory(prefix="routeway-redis-") as directory:
        rig = RedisRig(binary, directory)
        rig.start()
        try:
            yield rig
        finally:
            rig.kill()
