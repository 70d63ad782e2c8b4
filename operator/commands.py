"""`routeway operator`: run the kopf operator that turns Routeway resources into running gateways.

Credentials come from in-cluster config or KUBECONFIG, as kubectl finds them. Settings come
from the environment the Helm chart sets (see settings.py); these flags override it:

    routeway operator [--namespace NS ...] [--all-namespaces] [--proxy-image IMAGE]
                      [--log-level LEVEL] [--resync-interval SECONDS] [--peering NAME]
                      [--standalone] [--liveness PORT | --no-liveness]

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for unusable settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from routeway.operator.settings import OperatorSettings, SettingsError


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be a TCP port")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (watches ModelGateway/ModelRoute/ModelBackend)",
        description="Reconcile ModelGateway, ModelRoute and ModelBackend resources into proxy "
        "Deployments, their config and credentials. Flags override ROUTEWAY_* environment variables.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="namespace to watch (repeatable, or comma-separated); default: ROUTEWAY_NAMESPACES",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (cluster-wide)"
    )
    parser.add_argument("--proxy-image", metavar="IMAGE", help="proxy image (ROUTEWAY_PROXY_IMAGE)")
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log level (ROUTEWAY_LOG_LEVEL, default info)",
    )
    parser.add_argument(
        "--resync-interval",
        type=_positive,
        metavar="SECONDS",
        help="re-check every gateway this often (ROUTEWAY_RESYNC_INTERVAL, default 300)",
    )
    parser.add_argument("--peering", metavar="NAME", help="kopf peering name (ROUTEWAY_PEERING_NAME)")
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica (development)"
    )
    live = parser.add_mutually_exclusive_group()
    live.add_argument(
        "--liveness", type=_port, metavar="PORT", help="port of GET /healthz (ROUTEWAY_LIVENESS_PORT, 8080)"
    )
    live.add_argument("--no-liveness", action="store_true", help="do not serve /healthz")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    return OperatorSettings.from_env().apply_overrides(
        namespaces=args.namespaces,
        all_namespaces=args.all_namespaces,
        proxy_image=args.proxy_image,
        log_level=args.log_level,
        resync_interval=args.resync_interval,
        peering_name=args.peering,
        liveness_port=args.liveness,
        liveness_enabled=False if args.no_liveness else None,
        standalone=True if args.standalone else None,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"routeway operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(run_operator(settings))
    return 0


async def run_operator(settings: OperatorSettings, *, stop_flag: asyncio.Event | None = None) -> None:
    """The production wiring: kopf's default registry with its logins (in-cluster, then
    KUBECONFIG); `stop_flag` lets a test stop it the way a signal would."""
    import kopf  # heavy: imported only when the operator really runs
    from routeway.operator.main import create_registry

    registry = create_registry(settings)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_enabled else None
    await kopf.operator(
        registry=registry,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
    )
