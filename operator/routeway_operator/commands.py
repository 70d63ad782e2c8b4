"""`routeway operator`: run the kopf operator that turns Routeway resources into running gateways.

Credentials come from in-cluster config or KUBECONFIG, as kubectl finds them. Settings come
from the environment the Helm chart sets (see settings.py); these flags override it:

    routeway operator [--namespace NS ...] [--all-namespaces] [--proxy-image IMAGE]
                      [--log-level LEVEL] [--resync-interval SECONDS] [--peering NAME]
                      [--standalone] [--liveness PORT | --no-liveness]

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when required peering is missing or the
API cannot be reached, 2 for unusable settings. Peering is decided in peering.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from routeway_operator.settings import OperatorSettings, SettingsError

log = logging.getLogger("routeway.operator")


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


DEVELOPMENT_HELP = """\
outside a cluster (development), against any cluster your kubeconfig reaches:
  kubectl apply -f crds/                       # the CRDs (Routeway's and kopf's peering)
  routeway operator --namespace default        # credentials from KUBECONFIG, as kubectl
  kubectl apply -f examples/quickstart/        # a gateway, mock backends and routes

One replica needs no peering: without a KopfPeering 'routeway' in the watched namespace (or a
ClusterKopfPeering with --all-namespaces) the operator runs standalone and logs so. Several
replicas need peering, so that only one acts at a time: create the object and pass --peering.
The gateways run the proxy image --proxy-image names (default ghcr.io/routeway/routeway:latest).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (watches ModelGateway/ModelRoute/ModelBackend)",
        description="Reconcile ModelGateway, ModelRoute and ModelBackend resources into proxy "
        "Deployments, their config and credentials. Flags override ROUTEWAY_* environment variables.",
        epilog=DEVELOPMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="require the kopf peering NAME (ROUTEWAY_PEERING_NAME; the chart sets it): "
        "start fails at once when it is missing. Default: use peering 'routeway' if it exists, "
        "else run standalone and say so",
    )
    peering.add_argument(
        "--standalone", action="store_true", help="never peer: only for a single replica (development)"
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
    return asyncio.run(run_operator(settings))


async def run_operator(settings: OperatorSettings, *, stop_flag: asyncio.Event | None = None) -> int:
    """The production wiring: kopf's default registry with its logins (in-cluster, then
    KUBECONFIG); `stop_flag` lets a test stop it the way a signal would. Returns the exit
    code: 1 when peering is required but missing, or the API cannot be reached at all."""
    import kopf  # heavy: imported only when the operator really runs

    from routeway_operator.main import create_registry
    from routeway_operator.peering import plan_peering

    plan = await plan_peering(settings)
    if plan.fatal:
        log.error("%s", plan.message)
        return 1
    (log.info if plan.peering_name or settings.standalone else log.warning)("%s", plan.message)
    registry = create_registry(settings)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_enabled else None
    await kopf.operator(
        registry=registry,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        standalone=plan.peering_name is None,
        peering_name=plan.peering_name,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
    )
    return 0
