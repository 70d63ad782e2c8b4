"""`routeway proxy`: what a gateway's pods run — serve a rendered ProxyConfig.

The operator renders each ModelGateway into a ProxyConfig (a ConfigMap) and the credentials
its backends need (a Secret, one key per credential store key). Two ways to follow them:

- `--configmap NAME --secret NAME [--namespace NS]`: watched through the Kubernetes API
  (kube_source.py) — what the operator's Deployment runs; a change arrives in under a second.
- `--config FILE [--credentials PATH]`: files — the ConfigMap and Secret mounted as volumes
  (a change arrives with the kubelet's sync, about a minute), or local files from
  `routeway render -o json`.

Either way a config this proxy cannot serve (an unsupported schemaVersion from a newer
operator, say) is rejected and the last good one keeps serving. Exit 0 after a drain, 1 when
a port cannot be bound, 2 on a usage error. Sources are chosen in `build_source`.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp and the proxy are imported when the command runs, not at `--help`
    from routeway_proxy.config_apply import ConfigSource
    from routeway_proxy.process import ServeOptions

LOG_LEVELS = ("debug", "info", "warning", "error")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_serving_arguments(
    parser: argparse.ArgumentParser, *, default_host: str, default_admin_host: str
) -> None:
    """Flags shared by `routeway proxy` and `routeway serve`.

    The admin port has its own address because it answers without authentication (/config,
    /routes, /usage, rollout actions under `serve`): `serve` keeps it on loopback even when
    `--host` opens the API to the network; a pod's stays reachable by Prometheus and the
    operator, behind the chart's NetworkPolicy."""
    parser.add_argument(
        "--host", default=default_host, help=f"address to listen on for clients (default: {default_host})"
    )
    parser.add_argument(
        "--admin-host",
        default=default_admin_host,
        metavar="ADDRESS",
        help="address of the admin port, which has no authentication (default: "
        f"{default_admin_host}, whatever --host says)",
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="client port (default: 8080; 0 picks one, logged at start)"
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=9090,
        help="/metrics, /healthz, /readyz, /config, /routes (default: 9090)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        default=os.cpu_count() or 1,
        help="processes sharing the client port with SO_REUSEPORT (default: number of CPUs)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight (streams included) may take to finish (default: 30)",
    )
    parser.add_argument(
        "--worker-timeout",
        type=non_negative_float,
        default=30.0,
        metavar="SECONDS",
        help="with several workers, one whose event loop stays blocked this long is killed and "
        "replaced (default: 30; 0 disables); applying a config update is not counted",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="write one JSON line per request to stdout (method, path, model, route, backend, "
        "client, status, duration, tokens, cost, cache; never a key, header value or body)",
    )
    add_connection_arguments(parser)


def duration_seconds(text: str) -> float:
    """A positive duration: `10s`, `500ms`, `1m30s`, or a plain number of seconds."""
    from routeway.durations import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive duration")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Client connection limits (client_conn.py); a ModelGateway's `spec.connections`."""
    group = parser.add_argument_group("client connections (per worker process)")
    group.add_argument(
        "--header-timeout",
        type=duration_seconds,
        default=10.0,
        metavar="DURATION",
        help="the request line and headers must arrive within this time of their first byte, "
        "else 408 and the connection closes (default: 10s)",
    )
    group.add_argument(
        "--body-timeout",
        type=duration_seconds,
        default=30.0,
        metavar="DURATION",
        help="longest gap between two reads of a request body, else 408 and the connection "
        "closes (default: 30s)",
    )
    group.add_argument(
        "--idle-timeout",
        type=duration_seconds,
        default=60.0,
        metavar="DURATION",
        help="a keep-alive connection with no request for this long is closed (default: 60s)",
    )
    group.add_argument(
        "--max-connections",
        type=positive_int,
        default=4096,
        metavar="N",
        help="open client connections per worker; beyond it a new connection gets 503 and is "
        "closed, the open ones are not touched (default: 4096)",
    )


def check_serving_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors argparse cannot see on its own (exit 2)."""
    if args.port == args.admin_port and args.port != 0:
        parser.error("--port and --admin-port must differ")


def options_from_args(args: argparse.Namespace, *, command: str) -> ServeOptions:
    from routeway_proxy.client_conn import ConnectionLimits
    from routeway_proxy.process import ServeOptions

    return ServeOptions(
        host=args.host,
        admin_host=args.admin_host,
        port=args.port,
        admin_port=args.admin_port,
        workers=args.workers,
        drain_timeout=args.drain_timeout,
        worker_timeout=args.worker_timeout,
        log_level=args.log_level,
        access_log=args.access_log,
        connections=ConnectionLimits(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout,
            max_per_worker=args.max_connections,
        ),
        command=command,
    )


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `proxy` to the `routeway` command line."""
    parser = subparsers.add_parser(
        "proxy",
        help="serve a rendered ProxyConfig (what gateway pods run)",
        description="Serve a ProxyConfig with its credentials and re-apply them when they change: "
        "from files (--config, --credentials), or watched in the cluster (--configmap, --secret).",
    )
    files = parser.add_argument_group("config from files (a mounted ConfigMap and Secret, or local files)")
    files.add_argument(
        "--config", metavar="FILE", help="ProxyConfig JSON, as `routeway render -o json` prints it"
    )
    files.add_argument(
        "--credentials",
        metavar="PATH",
        help="directory with one file per credential store key (namespace_secret_key), or a JSON/YAML "
        "file mapping credential refs (namespace/secret/key) to values",
    )
    cluster = parser.add_argument_group(
        "config watched through the Kubernetes API (what the operator deploys)"
    )
    cluster.add_argument("--configmap", metavar="NAME", help="ConfigMap holding the rendered ProxyConfig")
    cluster.add_argument("--secret", metavar="NAME", help="Secret holding the credentials, by store key")
    cluster.add_argument(
        "--namespace", metavar="NS", help="namespace of both (default: $POD_NAMESPACE, else the pod's own)"
    )
    add_serving_arguments(parser, default_host="0.0.0.0", default_admin_host="0.0.0.0")
    parser.set_defaults(func=run, parser=parser)


def build_source(args: argparse.Namespace) -> ConfigSource:
    """The one place a config source is chosen from flags; a usage error raises SystemExit(2)."""
    parser: argparse.ArgumentParser = args.parser
    check_serving_args(parser, args)
    if (args.config is None) == (args.configmap is None):
        parser.error("exactly one of --config FILE or --configmap NAME is required")
    if args.config is not None:
        if args.secret or args.namespace:
            parser.error("--secret and --namespace go with --configmap, not --config")
        from routeway_proxy.config_file import ConfigFileSource

        return ConfigFileSource(args.config, args.credentials)
    if args.credentials:
        parser.error("--credentials goes with --config; with --configmap use --secret")
    from routeway_proxy.kube_source import KubeConfigSource

    return KubeConfigSource(
        namespace=args.namespace or own_namespace(), configmap=args.configmap, secret=args.secret
    )


def own_namespace() -> str:
    """The pod's namespace: the downward API variable, else the service account's file."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"


def run(args: argparse.Namespace) -> int:
    from routeway_proxy.process import run_proxy

    return run_proxy(build_source(args), options_from_args(args, command="routeway proxy"))
