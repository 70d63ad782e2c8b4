"""Command-line parsing of `routeway proxy` and `routeway serve`, in-process (no servers).

Covers: `--config` selects the file source with its credentials; `--configmap` selects the
in-cluster source, namespace from POD_NAMESPACE unless given; mixing the two families or
giving neither is a usage error (exit 2); defaults match the documented contract.
"""

from __future__ import annotations

import argparse
import os

import pytest
from routeway_proxy import commands
from routeway_proxy.config_file import ConfigFileSource
from routeway_proxy.kube_source import KubeConfigSource

from routeway import serve


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="routeway")
    sub = parser.add_subparsers(required=True)
    commands.register(sub)
    serve.register(sub)
    return parser.parse_args(argv)


def test_file_source_and_defaults() -> None:
    args = parse("proxy", "--config", "c.json", "--credentials", "creds/")
    assert commands.build_source(args) == ConfigFileSource("c.json", "creds/")
    options = commands.options_from_args(args, command="routeway proxy")
    assert (options.host, options.port, options.admin_port) == ("0.0.0.0", 8080, 9090)
    assert options.workers == (os.cpu_count() or 1) and options.drain_timeout == 30.0


def test_cluster_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "team-a")
    args = parse("proxy", "--configmap", "gw-config", "--secret", "gw-credentials")
    assert commands.build_source(args) == KubeConfigSource("team-a", "gw-config", "gw-credentials")
    args = parse("proxy", "--configmap", "gw-config", "--namespace", "team-b")
    assert commands.build_source(args) == KubeConfigSource("team-b", "gw-config", None)


@pytest.mark.parametrize(
    "argv",
    [
        ("proxy",),
        ("proxy", "--config", "c.json", "--configmap", "x"),
        ("proxy", "--config", "c.json", "--secret", "x"),
        ("proxy", "--configmap", "x", "--credentials", "dir/"),
        ("proxy", "--config", "c.json", "--workers", "0"),
        ("proxy", "--config", "c.json", "--port", "9000", "--admin-port", "9000"),
    ],
)
def test_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        commands.build_source(parse(*argv))
    assert exit_info.value.code == 2


def test_serve_defaults() -> None:
    args = parse("serve", "-f", "a.yaml", "-f", "dir/", "--gateway", "team-a/public")
    options = commands.options_from_args(args, command="routeway serve")
    assert args.paths == ["a.yaml", "dir/"] and args.gateway == "team-a/public"
    assert (options.host, options.port, options.admin_port, options.log_level) == (
        "127.0.0.1",
        8080,
        9090,
        "info",
    )
