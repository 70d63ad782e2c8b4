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
|  the chart's env)       | missing or unreadable  | error: exit at once, naming the object and  |
|                         |                        | how to create it                            |

Scope: cluster-wide operators peer through a ClusterKopfPeering, namespaced ones through a
KopfPeering in each watched namespace (kopf's own convention, and what the chart creates).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kubernetes_asyncio.config import ConfigException

from routeway_operator.kube import ApiError, KubeApi
from routeway_operator.settings import OperatorSettings, PeeringMode

PEERING_API = "/apis/kopf.dev/v1"


@dataclass(frozen=True)
class PeeringFound:
    """What the API said: whether kopf's peering CRDs are served, and where the object is missing
    (namespace names, or `cluster-wide`); `problem` is an API error that prevented the look."""

    crd_served: bool
    missing: tuple[str, ...] = ()
    problem: str = ""
    reachable: bool = True  # False: no answer from the API at all (or no credentials for it)


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
        return PeeringFound(False, problem=f"{exc.status} {exc.reason}")


async def plan_peering(settings: OperatorSettings) -> PeeringPlan:
    """Connect as kopf will (in-cluster config, else KUBECONFIG), look, and decide."""
    if settings.peering is PeeringMode.OFF:
        return decide_peering(settings, None)
    try:
        api = await KubeApi.connect()
    except (ConfigException, OSError) as exc:
        found = PeeringFound(False, problem=f"no credentials (in-cluster config or KUBECONFIG): {exc}")
        return decide_peering(settings, replace(found, reachable=False))
    try:
        return decide_peering(settings, await probe_peering(api, settings))
    finally:
        await api.close()
