"""`SourceHost`: what the process that reads a `ConfigSource` offers that source.

Why a seam here: a source that drives rollouts (`routeway serve`'s local adapter) runs in the
process that reads the config — the supervisor with `--workers N`, the single process
otherwise — and needs two things from the proxy: the observations of the whole process group
(to judge a canary), and a place on the admin port for its own read-only documents. A source
gets them by defining `attach(self, host: SourceHost) -> None` (optional; see
`config_apply.ConfigSource`), which `serve_process` and `supervise` call before `watch()` is
opened and before the admin app starts.

The proxy stays ignorant of rollouts: it knows routes, arms and revisions, and reports what
each revision's attempts did; deciding anything from that is the source's business.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric

from routeway.rollout.observations import report_to_json
from routeway_proxy.arm_metrics import report_from_metrics

if TYPE_CHECKING:
    from aiohttp import web

    from routeway_proxy.runtime import ProxyRuntime
    from routeway_proxy.table import RoutingTable

AdminHandler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def group_instance(started_at: float, pid: int | None = None) -> str:
    """A stable id of this process group for its lifetime: host, the reading process's pid
    and its start time (a restarted group is a new instance, whose counters start at zero)."""
    return f"{socket.gethostname()}-{pid if pid is not None else os.getpid()}-{int(started_at)}"


class SourceHost:
    """The observations and admin routes a config source may use (see the module docstring).

    `collect` yields the metric families holding the group's arm observations (one process's
    families, or the supervisor's sum of its workers' files); `started_at` is when those
    counters started.
    """

    def __init__(
        self,
        runtime: ProxyRuntime,
        collect: Callable[[], Iterable[Metric]],
        *,
        started_at: float | None = None,
        instance: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._collect = collect
        self.started_at = started_at if started_at is not None else time.time()
        self.instance = instance if instance is not None else group_instance(self.started_at)
        self._routes: list[tuple[str, str, AdminHandler]] = []
        self._installed = False

    def observations(self) -> dict[str, Any]:
        """The `GET /observations` document (`routeway.rollout.observations.report_to_json`),
        read in-process. With workers it may lag their requests by the ledger's flush delay;
        it reads files in that case, so call it off the event loop if that matters."""
        report = report_from_metrics(self._collect(), self.instance, self.started_at)
        return report_to_json(report, arm_names(self._runtime.table))

    def add_admin_route(self, method: str, path: str, handler: AdminHandler) -> None:
        """Serve `handler` on the admin port; only before the admin app is built (in `attach`)."""
        if self._installed:
            raise RuntimeError("admin routes can only be added before the admin app starts (in attach)")
        self._routes.append((method, path, handler))

    def install(self, app: web.Application) -> None:
        """Register the added routes on the admin `app` (`create_admin_app` does it)."""
        self._installed = True
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)


def attach_source(source: object, host: SourceHost) -> None:
    """Call `source.attach(host)` when the source defines it."""
    attach = getattr(source, "attach", None)
    if attach is not None:
        attach(host)


def arm_names(table: RoutingTable | None) -> dict[tuple[str, str], str]:
    """(route id, revision) → "stable"/"canary" for the revisions `table` serves."""
    names: dict[tuple[str, str], str] = {}
    if table is None:
        return names
    for route in table.routes.values():
        for entry in (route, route.canary):
            if entry is not None and entry.config.revision:
                names[(entry.id, entry.config.revision)] = entry.arm or "stable"
    return names
