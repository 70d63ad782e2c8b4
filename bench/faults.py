"""The upstream fault table: `routeway serve` in front of misbehaving loopback upstreams.

    .venv/bin/python bench/faults.py [--markdown docs/reliability-faults.md]

Starts the fault server of the proxy tests (tests/proxy/proxy_faults.py: refuse, hang, stall
and reset mid-body and mid-stream, garbage, 429/503 with and without Retry-After in both
forms, non-JSON error pages, huge answers, trickles), writes one ModelRoute per scenario (a
misbehaving `primary`, a `fallback`, `retries.attempts: 1`, `retryOn` with every value,
`firstByte` 1.5 s, `idle` 0.4 s), runs `routeway serve --workers 1` on them as a process and
sends each scenario one chat completion with aiohttp. Prints a markdown table: what the client
saw (status, body shape, bytes, Retry-After), after how long, and which backends were tried
(failed attempts per backend and reason from `routeway_upstream_errors_total` on the admin
port, and the `x-routeway-backend` of the answer), and whether that is the outcome the tests
expect. Also counts the gateway's log lines that hold the credential an error page echoed
(expected 0). Exits 1 when a row differs. Nothing leaves 127.0.0.1; not part of the test suite
(tests/proxy/test_proxy_upstream_faults.py asserts every row, without the timing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "proxy"))

from proxy_faults import (  # noqa: E402  (the tests' fault server and table)
    FAULTS,
    FIRST_BYTE,
    IDLE,
    LEAKED,
    Fault,
    FaultServer,
    Seen,
    ask,
    expected,
    failures_of,
)

ROUTEWAY = str(Path(sys.executable).with_name("routeway"))
RETRY_ON = ["connect-failure", "timeout", "5xx", "429"]
SHAPES = {
    "json": "chat completion",
    "sse": "stream, complete",
    "sse-cut": "stream cut by an error event",
    "error": "OpenAI error",
}


def slug(fault: Fault) -> str:
    return "f-" + fault.name.replace(" ", "-").lower()


def manifests(server: FaultServer) -> list[dict[str, object]]:
    documents: list[dict[str, object]] = []
    timeouts = {"connect": "1s", "firstByte": f"{int(FIRST_BYTE * 1000)}ms", "idle": f"{int(IDLE * 1000)}ms"}
    for fault in FAULTS:
        name = slug(fault)
        for role, behaviour in (("primary", fault.primary), ("fallback", fault.fallback)):
            documents.append(
                {
                    "apiVersion": "routeway.dev/v1alpha1",
                    "kind": "ModelBackend",
                    "metadata": {"name": f"{name}-{role}", "namespace": "default"},
                    "spec": {"provider": "openai", "url": server.base(behaviour), "timeouts": timeouts},
                }
            )
        documents.append(
            {
                "apiVersion": "routeway.dev/v1alpha1",
                "kind": "ModelRoute",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "model": name,
                    "backends": [{"name": f"{name}-primary"}],
                    "fallbacks": [{"name": f"{name}-fallback"}],
                    "retries": {"attempts": 1, "retryOn": RETRY_ON, "backoff": "50ms"},
                },
            }
        )
    return documents


def start(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`command` in its own session (stopped as a group), its output into `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"routeway serve exited with {process.returncode}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("routeway serve was not ready within 60 s")


async def error_samples(session: aiohttp.ClientSession, admin: str) -> dict[tuple[str, str], float]:
    async with session.get(f"{admin}/metrics") as response:
        text = await response.text()
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "routeway_upstream_errors_total":
                samples[(sample.labels["backend"], sample.labels["reason"])] = sample.value
    return samples


def tried(seen: Seen) -> str:
    failures = sorted(seen.failures, key=lambda failure: failure[0] != "primary")
    parts = [f"{role} x{count} ({reason})" for role, reason, count in failures]
    if seen.shape == "sse-cut":
        parts[-1] += ", after the stream had started: cut"
    elif seen.status < 300:
        parts.append(f"{seen.answered_by} answered")
    elif seen.answered_by:
        parts.append(f"the client got {seen.answered_by}'s answer")
    return ", then ".join(parts)


def row(fault: Fault, seen: Seen) -> str:
    size = f"{seen.size / 1048576:.1f} MiB" if seen.size >= 1048576 else f"{seen.size} B"
    ok = "yes" if seen.outcome() == expected(fault) else f"**no** (expected {expected(fault)})"
    return (
        f"| {fault.name} | {fault.what} | {seen.status} {SHAPES.get(seen.shape, seen.shape)} | {size} "
        f"| {seen.retry_after or '—'} | {seen.seconds:.2f} s | {tried(seen)} | {ok} |"
    )


async def run(markdown: Path | None) -> int:
    server = FaultServer()
    await server.start()
    with tempfile.TemporaryDirectory(prefix="routeway-faults-") as folder:
        text = yaml.safe_dump_all(manifests(server))
        await asyncio.to_thread(Path(folder, "faults.yaml").write_text, text)
        port, admin_port = free_port(), free_port()
        log_path = Path(folder, "serve.log")
        command = [ROUTEWAY, "serve", "-f", folder, "--port", str(port), "--admin-port", str(admin_port)]
        command += ["--workers", "1", "--log-level", "debug", "--access-log"]
        process = await asyncio.to_thread(start, command, log_path)
        lines = [
            "| scenario | the primary upstream | client saw | bytes | Retry-After | after | backends tried | as the tests expect |"
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        different = 0
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                admin = f"http://127.0.0.1:{admin_port}"
                await wait_ready(session, f"{admin}/readyz", process)
                v1 = f"http://127.0.0.1:{port}/v1"
                for fault in FAULTS:
                    seen = await ask(session, v1, slug(fault), fault.stream)
                    await asyncio.sleep(0.3)  # the worker's counts reach the admin port within 0.1 s
                    roles = {
                        f"default/{slug(fault)}-primary": "primary",
                        f"default/{slug(fault)}-fallback": "fallback",
                    }
                    seen.failures = failures_of(await error_samples(session, admin), roles)
                    different += seen.outcome() != expected(fault)
                    lines.append(row(fault, seen))
                    print(lines[-1], flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
            await server.close()
        log_text = await asyncio.to_thread(log_path.read_text, errors="replace")
        leaks = sum(LEAKED in line for line in log_text.splitlines())
    table = "\n".join(lines)
    summary = (
        f"{len(FAULTS)} scenarios, {different} different from what the tests expect; "
        f"log lines (every level, access log included) holding the credential an error page echoed: {leaks}"
    )
    print()
    print(table)
    print()
    print(summary)
    if markdown is not None:
        await asyncio.to_thread(markdown.write_text, table + "\n\n" + summary + "\n")
    return 1 if different or leaks else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(run(arguments.markdown)))


if __name__ == "__main__":
    main()
