"""`routeway serve`: the proxy on one machine, from manifest files, reloaded as they change.

The manifests go through `load_local` — the translation the operator runs — so what serves
here is what a cluster would serve. The files and folders given with `-f` are watched
(a file added to a watched folder counts); a saved change is live within a second.

Problems are kept to the object they concern, as the operator does (issue 14 item 3): an
object whose new version has a translation finding (a missing backend, a model-name conflict,
a revoked key Secret), does not match its schema, or sits in a file that no longer parses,
keeps serving its last good version (routeway.lastgood; one it never had is left out), while
the rest of the change applies; the problems, and which objects serve an older version, are
logged and shown at `/routes` (`problems`). Only a load with no gateway to serve, or a first
load whose files do not parse (there is no last good version of anything yet), is rejected as
a whole: logged once, shown at `/routes` (`lastRejection`), the last good config keeps serving.
If the very first load is rejected the proxy starts anyway — `serve` is a watch-mode tool, and
the fix is usually one save away — with `/readyz` at 503 and every request answered 503 until
a valid config is saved. Exit codes:

- 0: stopped by SIGTERM/SIGINT (in-flight requests drained), whatever the config was;
- 1: a port could not be bound, or a second signal cut the drain short;
- 2: usage error, including a `-f` path that does not exist (a typo; nothing to watch).

To check manifests without serving, use `routeway validate`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routeway_proxy.commands import add_serving_arguments, check_serving_args, options_from_args

from routeway.cli import add_skip_foreign
from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.local import LocalLoad, Memory, load_local
from routeway.manifests import YAML_SUFFIXES
from routeway.serve_driver import RolloutDriver, SourceHost

if TYPE_CHECKING:  # aiohttp and the proxy are imported when the command runs, not at `--help`
    from routeway_proxy.config_file import Snapshot

POLL_INTERVAL = 0.2
"""Seconds between checks of the watched files: a saved change is live well within a second."""

log = logging.getLogger("routeway.serve")


@dataclass(frozen=True)
class LocalManifestSource:
    """Manifest files and folders, re-translated whenever one of them changes.

    Watches both what `-f` names (so new files in a folder are seen) and every file the last
    load read. With several workers only the supervisor runs it (see `proxy/routeway_proxy/relay.py`).

    Routes roll out as their strategy says (issue 12): `rollouts` keeps every route's rollout
    in memory, serves its arms and answers `/rollouts` on the admin port (routeway.serve_driver;
    a restart forgets rollouts, see routeway.serve_rollouts).
    """

    paths: tuple[str, ...]
    gateway: str | None = None
    interval: float = POLL_INTERVAL
    skip_foreign: bool = False  # `--skip-foreign`: serve from a folder that holds other kinds too
    rollouts: RolloutDriver = field(default_factory=RolloutDriver, compare=False, repr=False)
    # The last served load's memory: each object's last good version (routeway.local.Memory).
    # One list slot, so the frozen source can replace it; only the reading thread writes it.
    memory: list[Memory] = field(default_factory=list, compare=False, repr=False)

    def describe(self) -> str:
        return ", ".join(self.paths)

    def attach(self, host: SourceHost) -> None:
        """The proxy's seam (routeway_proxy.source_host): observations and admin routes."""
        self.rollouts.attach(host)

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        async for update in self.rollouts.updates(self.reads(), self.describe()):
            yield update

    async def reads(self) -> AsyncIterator[LocalLoad | ConfigRejected]:
        """Each read of the files that changed something: a good one as it was loaded, a bad
        one as its rejection."""
        from routeway_proxy.config_file import FileDigests, list_files, watch_snapshots

        digests = FileDigests()
        read: tuple[str, ...] = ()

        def take() -> Snapshot:
            files: list[str] = []
            for path in self.paths:
                files += list_files(path, recursive=True, suffixes=YAML_SUFFIXES)
            return digests.snapshot([*files, *read])

        async for _ in watch_snapshots(take, self.interval):
            result = await asyncio.to_thread(self.load)
            if isinstance(result, LocalLoad):
                read = result.watched
                update = to_update(result, self.describe())
                yield result if isinstance(update, ConfigLoaded) else update
            else:
                yield result

    def load(self) -> LocalLoad | ConfigRejected:
        """One read of the files; a load that will be served leaves its memory for the next,
        so an object whose new version has a problem keeps its last good version."""
        try:
            memory = self.memory[0] if self.memory else None
            result = load_local(self.paths, self.gateway, skip_foreign=self.skip_foreign, memory=memory)
        except Exception as exc:  # a bug in translation must not take the proxy down
            log.exception("translating %s failed", self.describe())
            return ConfigRejected(self.describe(), (f"cannot load manifests: {type(exc).__name__}: {exc}",))
        if isinstance(to_update(result, self.describe()), ConfigLoaded) and result.memory is not None:
            self.memory[:] = [result.memory]
        return result


def to_update(result: LocalLoad, source: str) -> ConfigUpdate:
    """A blocking load (no gateway, or a first load whose files do not parse) rejects the
    change: the last good config keeps serving. Anything else is served — objects with a
    problem in their last good versions, as the operator does — and the problems travel
    along as warnings, shown in the log and at /routes."""
    if result.blocking or result.config is None:
        return ConfigRejected(source, result.problems or ("no config could be rendered",))
    return ConfigLoaded(result.config, result.credentials, source, warnings=result.problems)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the `routeway` command line."""
    parser = subparsers.add_parser(
        "serve",
        help="serve manifests on this machine, reloading them as they change",
        description="Translate the manifests (Secrets in them included), serve them, and watch the "
        "files: a saved change is live within a second; an invalid one is reported and the last "
        "good config keeps serving.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or folder (repeatable; folders are read recursively)",
    )
    parser.add_argument(
        "--gateway",
        metavar="NAME",
        help="ModelGateway to serve: NAME or NAMESPACE/NAME (default: the only one)",
    )
    add_skip_foreign(parser, counted=False)
    add_serving_arguments(parser, default_host="127.0.0.1", default_admin_host="127.0.0.1")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    check_serving_args(args.parser, args)
    if "-" in args.paths:
        print("routeway serve: error: cannot watch stdin ('-f -'); give files or folders", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"routeway serve: error: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    options = options_from_args(args, command="routeway serve")
    from routeway_proxy.process import run_proxy

    source = LocalManifestSource(tuple(args.paths), args.gateway, skip_foreign=args.skip_foreign)
    return run_proxy(source, options)
