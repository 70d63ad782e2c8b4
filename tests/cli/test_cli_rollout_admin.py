"""`routeway rollout … --admin URL` against a real HTTP server on 127.0.0.1 in the shape issue 12
pins for `routeway serve`'s admin port, with the real rollout machine behind it
(cli_admin_stub.py).

Matrix: status as text and as JSON (the entry as served) / each action's POST (path, the undo
body) and the outcome line / a refused action (409: exit 1 with the machine's reason) / a
missing route (in the list, 404 on POST) / an unreachable port / a server error / -n and
NAMESPACE/NAME / --watch: frames at a fake clock (redrawn in place on a terminal, printed when
changed elsewhere, a failed refresh shown under the last good view, the first read must
succeed) and Ctrl-C ending a real `routeway rollout status --watch` process with exit code 0.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_admin_stub import AdminStub, running_stub

from routeway.cli import main
from routeway.rollout_cli import watch
from routeway.rollout_client import AdminClient, RolloutError
from routeway.rollout_text import Style

ROUTEWAY = str(Path(sys.executable).parent / "routeway")


@pytest.fixture()
def stub() -> Any:
    with running_stub() as s:
        yield s


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["rollout", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_as_text(stub: AdminStub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "chat", "--admin", stub.url)
    assert (code, err) == (0, "")
    assert "Route:    default/chat\nPhase:    Paused\n" in out
    assert "  ✔ 1. setWeight 10%\n  ‖ 2. pause (until promote)  (waiting for promote)\n" in out
    assert "  default/b  canary  10%\n" in out
    assert "\x1b[" not in out  # not a terminal: no colours


def test_status_as_json_is_the_entry_as_served(stub: AdminStub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "default/chat", "--admin", stub.url, "-o", "json")
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(stub.entry("default/chat")))


@pytest.mark.parametrize(
    ("args", "path", "body", "printed"),
    [
        (["promote"], "promote", {}, "default/chat: promote done, phase Progressing, step 4/4, canary 50%"),
        (["promote", "--full"], "promote-full", {}, "default/chat: promote-full done, phase Stable"),
        (["abort"], "abort", {}, "default/chat: abort done, phase RolledBack, aborted by hand (admin-1)"),
        (
            ["undo", "--to-revision", "r1"],
            "undo",
            {"revision": "r1"},
            "default/chat: undo done, phase Stable",
        ),
    ],
)
def test_actions_post_the_pinned_path(
    stub: AdminStub, capsys: pytest.CaptureFixture[str], args: list[str], path: str, body: Any, printed: str
) -> None:
    code, out, err = run(capsys, args[0], "chat", *args[1:], "--admin", stub.url)
    assert (code, err, out) == (0, "", printed + "\n")
    assert stub.posts == [(f"/rollouts/default/chat/{path}", body)]


def test_retry_after_abort(stub: AdminStub, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "abort", "chat", "--admin", stub.url)[0] == 0
    code, out, _ = run(capsys, "retry", "chat", "--admin", stub.url)
    assert code == 0 and out.startswith("default/chat: retry done, phase Paused, step 2/4, canary 10%")


def test_a_refused_action_exits_1_with_the_reason(
    stub: AdminStub, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "abort", "default/other", "--admin", stub.url)
    assert (code, out) == (1, "")
    assert err == "error: abort of default/other refused: abort (admin-1) refused: no rollout in progress\n"


def test_a_missing_route(stub: AdminStub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "nope", "--admin", stub.url)
    assert (code, out) == (1, "")
    assert err == f"error: route default/nope not found at {stub.url} (routes: default/chat, default/other)\n"
    code, _, err = run(capsys, "promote", "nope", "-n", "team", "--admin", stub.url)
    assert code == 1 and err.startswith("error: no route team/nope (POST ") and err.endswith(": 404)\n")
    assert stub.posts == [("/rollouts/team/nope/promote", {})]


def test_unreachable_and_failing_servers_exit_1(stub: AdminStub, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "chat", "--admin", "http://127.0.0.1:9")
    assert code == 1 and err.startswith(
        "error: cannot reach routeway serve's admin port at http://127.0.0.1:9: "
    )
    stub.fail_gets = True
    code, _, err = run(capsys, "status", "chat", "--admin", stub.url.removeprefix("http://"))
    assert code == 1
    assert err == f"error: GET {stub.url}/rollouts: HTTP 500: the rollout adapter is not running\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_watch_frames_on_a_fake_clock(stub: AdminStub) -> None:
    clock = [stub.now]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
        if len(slept) == 2:
            stub.fail_gets = True  # the third read fails: the last view stays, with the error

    out = io.StringIO()
    client = AdminClient(stub.url)
    try:
        await watch(
            client,
            "default",
            "chat",
            out=out,
            style=Style(),
            clock=lambda: clock[0],
            sleep=sleep,
            width=lambda: 50,
            frames=3,
        )
    finally:
        await client.close()
    text = out.getvalue()
    assert slept == [1.0, 1.0] and stub.gets == 3
    frames = text.split("\ndefault/chat  -  ")
    assert len(frames) == 2  # the second frame was the same as the first: not printed again
    assert text.startswith("default/chat  -  00:00:00 UTC  every 1s  -  Ctrl-…\n\nRoute:    default/chat\n")
    assert frames[1].startswith("00:00:02 UTC")
    assert "Phase:    Paused" in frames[1]
    assert frames[1].endswith(
        "error: GET " + f"{stub.url}/rollouts: HTTP 500: the rollout adapter is not running"[:38] + "…\n"
    )
    assert all(len(line) <= 50 for line in text.splitlines())


async def test_watch_redraws_in_place_on_a_terminal(stub: AdminStub) -> None:
    out = Terminal()
    client = AdminClient(stub.url)

    async def sleep(_: float) -> None:
        return None

    try:
        await watch(
            client,
            "default",
            "chat",
            out=out,
            style=Style(color=True),
            sleep=sleep,
            width=lambda: 80,
            frames=2,
        )
    finally:
        await client.close()
    text = out.getvalue()
    assert text.startswith("\x1b[?25l\x1b[H") and text.endswith("\x1b[J\x1b[?25h")
    assert text.count("\x1b[H") == 2 and "\x1b[33mPaused\x1b[0m\x1b[K\n" in text


async def test_watch_needs_a_first_read(stub: AdminStub) -> None:
    client = AdminClient(stub.url)
    try:
        with pytest.raises(RolloutError, match="not found"):
            await watch(client, "default", "nope", out=io.StringIO(), style=Style(), frames=1)
    finally:
        await client.close()


def test_ctrl_c_ends_a_watch_with_exit_code_0(stub: AdminStub) -> None:
    proc = subprocess.Popen(
        [ROUTEWAY, "rollout", "status", "chat", "--watch", "--admin", stub.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "Ctrl-C to exit" in first
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
