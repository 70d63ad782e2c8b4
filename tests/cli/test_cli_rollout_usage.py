"""Usage errors of `routeway rollout` exit 2 with a message and never reach a server.

Matrix: ROUTE forms (NAME, NAMESPACE/NAME, -n; too many slashes, empty parts, -n against the
ROUTE's namespace) / argparse's own errors (a missing --to-revision, --admin with --context,
an unknown command, a bad -o, a negative --timeout) / --watch with -o json / `--help` of every
command names its flags.
"""

from __future__ import annotations

import pytest

from routeway.cli import main
from routeway.rollout_cli import UsageError, parse_route

UNREACHABLE = ["--admin", "http://127.0.0.1:9"]  # a usage error must fail before any request


def test_route_forms() -> None:
    assert parse_route("chat", None) == (None, "chat")
    assert parse_route("chat", "team") == ("team", "chat")
    assert parse_route("team/chat", None) == ("team", "chat")
    assert parse_route("team/chat", "team") == ("team", "chat")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "a/b/c"], "ROUTE must be NAME or NAMESPACE/NAME, not 'a/b/c'"),
        (["promote", "/chat"], "ROUTE must be NAME or NAMESPACE/NAME, not '/chat'"),
        (["abort", "team/"], "ROUTE must be NAME or NAMESPACE/NAME, not 'team/'"),
        (
            ["retry", "team/chat", "-n", "other"],
            "ROUTE 'team/chat' names namespace 'team' but -n says 'other'",
        ),
        (["status", "chat", "--watch", "-o", "json"], "--watch and -o json do not go together"),
    ],
)
def test_our_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["rollout", *args, *UNREACHABLE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"routeway rollout {args[0]}: error: {message}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["undo", "chat"], "the following arguments are required: --to-revision"),
        (["status", "chat", "--context", "kind"], "argument --admin: not allowed with argument --context"),
        (["pause", "chat"], "invalid choice: 'pause'"),
        (["status", "chat", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
        (["promote", "chat", "--timeout", "-1"], "argument --timeout: must not be negative"),
        (["status"], "the following arguments are required: ROUTE"),
    ],
)
def test_argparse_errors(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rollout", *args, *UNREACHABLE])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("status", ["--watch", "-o {json}", "-n NAMESPACE", "--admin URL", "--context NAME"]),
        ("promote", ["--full", "--no-wait", "--timeout SECONDS"]),
        ("abort", ["--no-wait"]),
        ("retry", ["--no-wait"]),
        ("undo", ["--to-revision REV"]),
    ],
)
def test_help_names_the_flags(capsys: pytest.CaptureFixture[str], command: str, flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rollout", command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: routeway rollout {command} ")
    assert all(flag in out for flag in flags)


def test_usage_error_type() -> None:
    with pytest.raises(UsageError):
        parse_route("a/b/c", None)
