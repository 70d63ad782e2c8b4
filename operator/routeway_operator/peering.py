"""Which kopf peering the operator runs with, decided once before kopf starts.

Why here and not in kopf: kopf with a peering name waits, paused and silent, until its
KopfPeering object appears; an operator started by hand against a cluster without one looked
hung. So the API is asked first (`probe_peering`), and a pure rule (`decide_peering`) turns the
answer and the settings into a plan with one log line that says what happens and why:

| mode (settings.peering) | peering object found   | plan                                        |
|-------------------------|------------------------|---------------------------------------------|
| `off` (`--standalone`)  | not asked              | standalone                                  |
| `auto` (the default)    | in every watched scope | peering with it                             |
| `auto`                  | missing or unreadable  | standalone, with a warning naming the fix   |
| `required` (`--peering`,| in every watched scope | peering with it                             |
|  the chart's env)       | missing or unreadable  | error: exit, naming the object and how to   |
|                         |                        | create it                                   |
| any but `off`           | the API keeps failing  | error: exit (standalone could mean two      |
|                         | (no answer, 429, 5xx)  | active replicas)                            |

Answers that may change in a moment (the API failing, or a required object not there yet —
Helm creates the chart's KopfPeering after the operator's Deployment) are asked again for up to
`settings.peering_wait` seconds, with a log line each time, before they decide.

Scope: cluster-wide operators peer through a ClusterKopfPeering, namespaced ones through a
KopfPeering in each watched namespace (kopf's own convention, and what the chart creates).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from kubernetes_asyncio.config import ConfigException

from routeway_operator.kube import RETRYABLE, ApiError, KubeApi
from routeway_operator.settings import OperatorSettings, PeeringMode

log = logging.getLogger("routeway.operator")

PEERING_API = "/apis/kopf.dev/v1"
PEERING_RETRY_EVERY = 2.0
"""Seconds between looks while the answer may still change (see `plan_peering`)."""


@dataclass(frozen=True)
class PeeringFound:
    """What the API said: whether kopf's peering CRDs are served, and where the object is missing
    (namespace names, or `cluster-wide`); `problem` is an API error that prevented the look."""

    crd_served: bool
    missing: tuple[str, ...] = ()
    problem: str = ""
    reachable: bool = True  # False: no answer from the API at all (or no credentials for it)
    status: int | None = None  # the HTTP status of the error in `problem`, if the API answered

    @property
    def transient(self) -> bool:
        """An answer that may be different in a moment: no answer, throttling, server trouble."""
        return not self.reachable or self.status in RETRYABLE


@dataclass(frozen=True)
class PeeringPlan:
    peering_name: str | None  # None: standalone
    message: str
    fatal: bool = False


def _scope(settings: OperatorSettings) -> str:
    if settings.clusterwide:
        return f"ClusterKopfPeering {settings.peering_name!r}"
    return f"KopfPeering {settings.peering_name!r} in namespace(s) {', '.join(settings.namespaces)}"


def how_to_create(settings: OperatorSettings) -> str:
    """The commands that make peering work, for the message a person reads."""
    kind = "ClusterKopfPeering" if settings.clusterwide else "KopfPeering"
    lines = ["  kubectl apply -f crds/kopf.dev_peerings.yaml   # kopf's peering CRDs, once per cluster"]
    namespaces = (None,) if settings.clusterwide else settings.namespaces
    for namespace in namespaces:
        where = f", namespace: {namespace}" if namespace else ""
        lines.append(
            f"  echo '{{apiVersion: kopf.dev/v1, kind: {kind}, "
            f"metadata: {{name: {settings.peering_name}{where}}}}}' | kubectl apply -f -"
        )
    return "\n".join(lines)


def decide_peering(settings: OperatorSettings, found: PeeringFound | None) -> PeeringPlan:
    """The plan for `settings` given what the API said (`found` is None when not asked)."""
    if settings.peering is PeeringMode.OFF:
        return PeeringPlan(None, "peering off (--standalone): run a single replica only")
    assert found is not None, "the API is asked unless peering is off"
    if not found.reachable:
        return PeeringPlan(None, f"the Kubernetes API cannot be reached: {found.problem}", fatal=True)
    if found.transient:  # still failing after the retries: standalone could mean two leaders
        return PeeringPlan(
            None, f"the peering could not be read, the API keeps failing ({found.problem})", fatal=True
        )
    if found.crd_served and not found.missing and not found.problem:
        return PeeringPlan(settings.peering_name, f"peering through {_scope(settings)}")
    if found.problem:
        why = f"the peering could not be read ({found.problem})"
    elif not found.crd_served:
        why = "kopf's peering CRDs (kopf.dev) are not installed"
    else:
        kind = "ClusterKopfPeering" if settings.clusterwide else "KopfPeering"
        where = "" if settings.clusterwide else f" in namespace(s) {', '.join(found.missing)}"
        why = f"{kind} {settings.peering_name!r} not found{where}"
    if settings.peering is PeeringMode.REQUIRED:
        return PeeringPlan(
            settings.peering_name,
            f"peering {settings.peering_name!r} is required (--peering or ROUTEWAY_PEERING_NAME) "
            f"but {why}. Create it:\n{how_to_create(settings)}\n"
            "or start without --peering to run a single replica standalone.",
            fatal=True,
        )
    return PeeringPlan(
        None,
        f"running standalone, without leader election: {why}. Run a single replica, or create "
        f"the peering and restart (or pass --peering {settings.peering_name} to require it):\n"
        f"{how_to_create(settings)}",
    )


async def probe_peering(api: KubeApi, settings: OperatorSettings) -> PeeringFound:
    """Ask the API whether the peering object(s) `settings` would use exist."""
    try:
        discovery = await api.get(PEERING_API)
        plural = "clusterkopfpeerings" if settings.clusterwide else "kopfpeerings"
        served = {resource.get("name") for resource in (discovery or {}).get("resources", [])}
        if plural not in served:
            return PeeringFound(crd_served=False)
        if settings.clusterwide:
            found = await api.get(f"{PEERING_API}/{plural}/{settings.peering_name}")
            return PeeringFound(True, () if found else ("cluster-wide",))
        missing = []
        for namespace in settings.namespaces:
            path = f"{PEERING_API}/namespaces/{namespace}/{plural}/{settings.peering_name}"
            if await api.get(path) is None:
                missing.append(namespace)
        return PeeringFound(True, tuple(missing))
    except ApiError as exc:
        if exc.status == 0:
            return PeeringFound(False, problem=exc.message, reachable=False)
        return PeeringFound(False, problem=f"{exc.status} {exc.reason}", status=exc.status)


async def plan_peering(settings: OperatorSettings) -> PeeringPlan:
    """Connect as kopf will (in-cluster config, else KUBECONFIG), look, and decide.

    An answer that may change in a moment is asked again every `PEERING_RETRY_EVERY` seconds
    for up to `settings.peering_wait`, each time with a log line saying what is missing: an
    API hiccup or a restart, and — with required peering — the chart's KopfPeering, which
    Helm creates after the operator's Deployment. What is still missing then decides."""
    if settings.peering is PeeringMode.OFF:
        return decide_peering(settings, None)
    try:
        api = await KubeApi.connect()
    except (ConfigException, OSError) as exc:
        found = PeeringFound(False, problem=f"no credentials (in-cluster config or KUBECONFIG): {exc}")
        return decide_peering(settings, replace(found, reachable=False))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.peering_wait
    try:
        while True:
            found = await probe_peering(api, settings)
            waiting = settings.peering is PeeringMode.REQUIRED and found.crd_served and bool(found.missing)
            plan = decide_peering(settings, found)
            if not (found.transient or waiting) or loop.time() >= deadline:
                return plan
            first_line = plan.message.splitlines()[0]
            log.info("peering not settled yet (%s); asking again in %gs", first_line, PEERING_RETRY_EVERY)
            await asyncio.sleep(min(PEERING_RETRY_EVERY, max(deadline - loop.time(), 0.0)))
    finally:
        await api.close()
