"""What a rollout serves: the rendered ProxyConfig with each route's arms put in.

Translation renders every route as its spec describes it now (the desired revision). A
rollout serves something else: the stable revision, and during a rollout the canary beside
it at the rollout's percent. `serve_rollouts` rewrites the rendered config accordingly, so the
proxy gets one document with everything resolved and never needs to know about rollouts
beyond "this route has two arms":

- the route's routing fields become the stable revision's, its `revision` that hash;
- `canary` holds the canary revision's routing fields, hash and percent;
- each arm's `pinnedBackends` holds the backend specs of its snapshot that differ from the
  config's current ones (a ModelBackend edit being rolled out: the stable arm keeps the old
  url), or that the config no longer has (a backend only the stable revision still uses).

Identity fields (id, namespace, name, public model, generation) always stay the rendered
route's: the route is the same object whichever revision it serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routeway.proxyconfig import BackendConfig, ProxyConfig, RouteConfig
from routeway.rollout.revision import RouteRevision, build_revision


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """The arms one route serves: its stable revision and, during a rollout, the canary."""

    stable: RouteRevision
    canary: RouteRevision | None = None
    canary_percent: float = 0.0  # what `canary_share` gives: 0 while the canary is not ready


def desired_revisions(config: ProxyConfig) -> dict[str, RouteRevision]:
    """The revision each rendered route describes now, by route id."""
    backends = {b.id: b for b in config.backends}
    return {r.id: build_revision(r, backends) for r in config.routes}


def serve_rollouts(config: ProxyConfig, served: Mapping[str, ServedRoute]) -> ProxyConfig:
    """`config` with the routes in `served` serving their arms, every other route marked with
    the revision it describes, and the config's `revision` recomputed."""
    current = {b.id: b for b in config.backends}
    routes = []
    for route in config.routes:
        arms = served.get(route.id)
        if arms is None:
            routes.append(route.model_copy(update={"revision": build_revision(route, current).hash}))
        else:
            routes.append(_serve(route, arms, current))
    return config.model_copy(update={"routes": tuple(routes)}).with_revision()


def _serve(route: RouteConfig, arms: ServedRoute, current: Mapping[str, BackendConfig]) -> RouteConfig:
    stable = arms.stable.route
    update: dict[str, Any] = {
        "targets": stable.targets,
        "fallbacks": stable.fallbacks,
        "retries": stable.retries,
        "timeout": stable.timeout,
        "sticky_header": stable.sticky_header,
        "revision": arms.stable.hash,
        "pinned_backends": pinned(arms.stable.backends, current),
        "canary": None,
    }
    canary = arms.canary
    if canary is not None:
        c = canary.route
        update["canary"] = {
            "revision": canary.hash,
            "weight": max(0.0, min(100.0, float(arms.canary_percent))),
            "targets": c.targets,
            "fallbacks": c.fallbacks,
            "retries": c.retries,
            "timeout": c.timeout,
            "sticky_header": c.sticky_header,
            "pinned_backends": pinned(canary.backends, current),
        }
    # validated again (field names are accepted beside aliases), so the arm is checked too
    return RouteConfig.model_validate(route.model_dump() | update)


def pinned(
    snapshot: Iterable[BackendConfig], current: Mapping[str, BackendConfig]
) -> tuple[BackendConfig, ...]:
    """The snapshot's backend specs that the current config does not hold as they are. Pricing
    is not part of a revision: a pinned spec is charged at the backend's current price."""
    out = []
    for b in snapshot:
        now = current.get(b.id)
        if now is not None:
            b = b.model_copy(update={"pricing": now.pricing})
        if now != b:
            out.append(b)
    return tuple(out)
