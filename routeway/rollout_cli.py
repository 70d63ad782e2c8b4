"""`routeway rollout`: watch and steer progressive delivery from the command line.

    routeway rollout status ROUTE [--watch] [-o json]
    routeway rollout promote ROUTE [--full]
    routeway rollout abort|retry ROUTE
    routeway rollout undo ROUTE --to-revision REV

ROUTE is NAME or NAMESPACE/NAME (or NAME with `-n NAMESPACE`). With `--admin URL` every
command talks to `routeway serve`'s admin port (routeway.rollout_client.AdminClient);
otherwise to the cluster of the kubeconfig (routeway.rollout_kube.ClusterClient), where an
action is an annotation on the route that the operator handles once.

This module only parses arguments and sequences I/O: the text comes from
routeway.rollout_view (pure), the I/O from the two clients, imported inside the command so
`routeway validate` never loads aiohttp or the Kubernetes client.

Exit codes: 0 done, 1 refused, failed or unreachable, 2 usage (argparse's convention).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TextIO

from routeway.rollout_text import Style
from routeway.rollout_view import RolloutView, describe_outcome, render_frame, render_status

if TYPE_CHECKING:
    from routeway.rollout_client import RolloutSource

WATCH_INTERVAL = 1.0
DEFAULT_WAIT = 10.0

DESCRIPTION = """\
Show and steer a route's progressive delivery (ModelRoute spec.strategy.canary).

With --admin URL the commands talk to `routeway serve`'s admin port (e.g.
http://127.0.0.1:9090); otherwise to the cluster of your kubeconfig (KUBECONFIG,
--context, or in-cluster), where promote/abort/retry/undo set the routeway.dev/<action>
annotation on the ModelRoute and wait for the operator to confirm it.

Exit codes: 0 done, 1 refused, failed or unreachable, 2 usage error."""

ROUTE_HELP = "the ModelRoute: NAME or NAMESPACE/NAME"


class UsageError(Exception):
    """Exit code 2, like argparse's own errors."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "rollout",
        help="show and steer a route's rollout: status [--watch], promote, abort, retry, undo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("route", metavar="ROUTE", help=ROUTE_HELP)
    common.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        help="the route's namespace (default: the kubeconfig context's namespace, else 'default'; "
        "with --admin: 'default')",
    )
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--admin",
        metavar="URL",
        help="talk to `routeway serve`'s admin port at URL (e.g. http://127.0.0.1:9090) instead of the cluster",
    )
    where.add_argument("--context", metavar="NAME", help="the kubeconfig context to use (cluster mode)")

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--no-wait",
        action="store_true",
        help="cluster mode: set the annotation and return without waiting for the operator to handle it",
    )
    waiting.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"cluster mode: how long to wait for the operator to handle the action (default {DEFAULT_WAIT:g})",
    )

    p = commands.add_parser(
        "status",
        parents=[common],
        help="the rollout: phase, revisions, steps, weights, analysis, history",
        description="Print a route's rollout: phase, stable and canary revisions, the steps with the "
        "current one marked, the weights per backend and arm, the last analysis against its limits, "
        "the revision history.",
    )
    p.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="a live view refreshed every second until Ctrl-C (exit code 0)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("json",),
        help="print the rollout document as JSON (status.rollout, or the admin port's entry)",
    )
    p.set_defaults(func=run_rollout, action=None)

    p = commands.add_parser(
        "promote",
        parents=[common, waiting],
        help="go past the current step (a pause, an inconclusive analysis); --full: promote at once",
        description="Promote the canary: past the current step, or with --full to stable at once.",
    )
    p.add_argument(
        "--full", action="store_true", help="skip the remaining steps: the canary becomes stable now"
    )
    p.set_defaults(func=run_rollout, action="promote")

    for action, text in (
        ("abort", "roll back the rollout in progress: all traffic on the stable revision at once"),
        ("retry", "roll out the rolled-back revision again, from the first step"),
    ):
        p = commands.add_parser(
            action, parents=[common, waiting], help=text, description=text[0].upper() + text[1:] + "."
        )
        p.set_defaults(func=run_rollout, action=action)

    text = "roll out an earlier revision of the route's history (see `status`) as a new rollout"
    p = commands.add_parser(
        "undo", parents=[common, waiting], help=text, description=text[0].upper() + text[1:] + "."
    )
    p.add_argument("--to-revision", required=True, metavar="REV", help="the revision hash to go back to")
    p.set_defaults(func=run_rollout, action="undo")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parse_route(route: str, namespace: str | None) -> tuple[str | None, str]:
    """(namespace or None for the default, name) from ROUTE and -n; UsageError when they
    disagree or ROUTE is not NAME or NAMESPACE/NAME."""
    parts = route.split("/")
    if len(parts) > 2 or not all(parts):
        raise UsageError(f"ROUTE must be NAME or NAMESPACE/NAME, not {route!r}")
    if len(parts) == 1:
        return namespace, parts[0]
    if namespace is not None and namespace != parts[0]:
        raise UsageError(f"ROUTE {route!r} names namespace {parts[0]!r} but -n says {namespace!r}")
    return parts[0], parts[1]


def run_rollout(args: argparse.Namespace) -> int:
    try:
        explicit, name = parse_route(args.route, args.namespace)
        if args.action is None and args.watch and args.output:
            raise UsageError("--watch and -o json do not go together")
    except UsageError as exc:
        print(f"routeway rollout {args.rollout_command}: error: {exc}", file=sys.stderr)
        return 2
    watching = args.action is None and args.watch
    try:
        return asyncio.run(_run(args, explicit, name))
    except KeyboardInterrupt:
        if watching:
            return 0  # Ctrl-C is how a watch ends
        raise


async def _run(args: argparse.Namespace, explicit: str | None, name: str) -> int:
    from routeway.rollout_client import RolloutError

    try:
        source, namespace = await _connect(args, explicit)
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action is None:
            return await _status(args, source, namespace, name)
        return await _act(args, source, namespace, name)
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await source.close()


async def _connect(args: argparse.Namespace, explicit: str | None) -> tuple[RolloutSource, str]:
    if args.admin:
        from routeway.rollout_client import AdminClient

        return AdminClient(args.admin), explicit or "default"
    from routeway.rollout_kube import ClusterClient, default_namespace

    wait = None if getattr(args, "no_wait", False) else getattr(args, "timeout", DEFAULT_WAIT)
    client = await ClusterClient.connect(context=args.context, wait=wait)
    return client, explicit or default_namespace(args.context)


async def _status(args: argparse.Namespace, source: RolloutSource, namespace: str, name: str) -> int:
    if args.watch:
        await watch(source, namespace, name, out=sys.stdout, style=terminal_style(sys.stdout))
        return 0
    view = await source.status(namespace, name)
    if args.output == "json":
        print(json.dumps(view.to_json(), indent=2, sort_keys=True))
    else:
        print(render_status(view, now=time.time(), style=terminal_style(sys.stdout)), end="")
    return 0


async def _act(args: argparse.Namespace, source: RolloutSource, namespace: str, name: str) -> int:
    action = "promote-full" if args.action == "promote" and args.full else args.action
    revision = args.to_revision if action == "undo" else None
    result = await source.act(namespace, name, action, revision)
    if result.refused is not None:
        print(f"error: {action} of {namespace}/{name} refused: {result.refused}", file=sys.stderr)
        return 1
    if result.pending is not None:
        print(result.pending, file=sys.stderr)
        return 0 if args.no_wait else 1
    if result.view is None:
        print(f"{namespace}/{name}: {action} done")
    else:
        print(describe_outcome(action, result.view))
    return 0


def terminal_style(stream: TextIO) -> Style:
    """Colours on a terminal unless NO_COLOR is set; Unicode symbols on a UTF-8 stream."""
    tty = stream.isatty()
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return Style(color=tty and not os.environ.get("NO_COLOR"), unicode=encoding == "utf8")


async def watch(
    source: RolloutSource,
    namespace: str,
    name: str,
    *,
    out: TextIO,
    style: Style,
    interval: float = WATCH_INTERVAL,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    width: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
    frames: int | None = None,
) -> None:
    """Redraw the route's rollout every `interval` until cancelled (Ctrl-C) or, for tests,
    after `frames` frames. On a terminal the frame is drawn in place; elsewhere (a pipe, a
    log) a frame is printed only when the rollout (or the error) changed. The first read must
    succeed (RolloutError otherwise); a later failure is shown under the last good view."""
    from routeway.rollout_client import RolloutError

    tty = out.isatty()
    view: RolloutView | None = await source.status(namespace, name)
    previous: str | None = None
    drawn = 0
    if tty:
        out.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        while frames is None or drawn < frames:
            error = None
            if drawn:
                try:
                    view = await source.status(namespace, name)
                except RolloutError as exc:
                    error = str(exc)
            frame = render_frame(
                view, now=clock(), width=width(), style=style, interval=interval, error=error
            )
            if tty:
                lines = frame.rstrip("\n").split("\n")
                out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
            else:
                # what changed, not the text: ages and the clock in the title change every second
                seen = json.dumps([view.to_json() if view is not None else None, error], sort_keys=True)
                if seen != previous:
                    out.write(("\n" if previous is not None else "") + frame)
                previous = seen
            out.flush()
            drawn += 1
            if frames is None or drawn < frames:
                await sleep(interval)
    finally:
        if tty:
            out.write("\x1b[?25h")
            out.flush()
