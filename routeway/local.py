"""Local mode: manifests on disk → the same translation the operator runs → one ProxyConfig.

`routeway validate`, `routeway render` and `routeway serve` all go through `evaluate`, so what
a GitOps pipeline reviews is exactly what a cluster would serve.

Implicit gateways: when the files hold no ModelGateway at all (an application team's folder
of routes, or the quick start), every gateway the routes name is assumed to exist with
default settings and open to routes from all namespaces. As soon as one ModelGateway is
present, gateways are taken as written and a route naming a missing one is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from routeway.credentials import lookup_in, resolve_credentials
from routeway.manifests import LoadResult, Problem, load_manifests
from routeway.proxyconfig import ProxyConfig
from routeway.render import render
from routeway.resources import (
    AllowedRoutes,
    ModelGateway,
    ModelGatewaySpec,
    ModelRoute,
    ObjectMeta,
    RouteNamespaces,
    Secret,
)
from routeway.translate import Inventory, NsName, ObjectKey, Translation, translate


@dataclass(frozen=True)
class Evaluation:
    loaded: LoadResult
    translation: Translation
    problems: tuple[Problem, ...]  # parse problems, then translation findings, in file order


@dataclass(frozen=True)
class LocalLoad:
    config: ProxyConfig | None  # None when the chosen gateway could not be rendered
    credentials: dict[str, str]  # credentialRef → value, from Secrets in the same files
    problems: tuple[str, ...]  # one line per problem; empty when everything is valid
    watched: tuple[str, ...]  # files that were read


def implicit_gateways(loaded: LoadResult) -> list[ModelGateway]:
    if any(isinstance(o, ModelGateway) for o in loaded.objects) or any(
        k.kind == "ModelGateway" for k in loaded.invalid
    ):
        return []
    wanted: set[NsName] = set()
    for obj in loaded.objects:
        if isinstance(obj, ModelRoute):
            ref = obj.spec.gateway_ref
            wanted.add((ref.namespace or obj.namespace, ref.name) if ref else (obj.namespace, "default"))
    open_to_all = AllowedRoutes(namespaces=RouteNamespaces(from_="All"))
    return [
        ModelGateway(
            metadata=ObjectMeta(name=name, namespace=ns), spec=ModelGatewaySpec(allowed_routes=open_to_all)
        )
        for ns, name in sorted(wanted)
    ]


def evaluate(paths: Sequence[str], stdin: IO[str] | None = None) -> Evaluation:
    loaded = load_manifests(paths, stdin)
    objects = [*loaded.objects, *implicit_gateways(loaded)]
    translation = translate(Inventory.from_objects(objects, loaded.invalid))
    problems = list(loaded.problems)
    for key, findings in translation.findings.items():
        if key in loaded.invalid:
            continue  # already reported field by field while parsing
        source = loaded.sources.get(key, "<implicit>")
        for f in findings:
            problems.append(Problem(source, str(key), f.field, f"{f.reason}: {f.message}"))
    return Evaluation(loaded, translation, tuple(problems))


def choose_gateway(translation: Translation, wanted: str | None) -> NsName | None:
    """`--gateway` takes `name` or `namespace/name`; without it: the only gateway, else
    `default/default`, else the first one in sorted order."""
    keys = sorted(translation.gateways)
    if wanted:
        if "/" in wanted:
            ns, name = wanted.split("/", 1)
            return (ns, name) if (ns, name) in translation.gateways else None
        matches = [k for k in keys if k[1] == wanted]
        return (
            matches[0]
            if len(matches) == 1
            else (("default", wanted) if ("default", wanted) in matches else None)
        )
    if not keys:
        return None
    if len(keys) == 1:
        return keys[0]
    return ("default", "default") if ("default", "default") in translation.gateways else keys[0]


def load_local(paths: Sequence[str], gateway: str | None = None) -> LocalLoad:
    ev = evaluate(paths)
    problems = [str(p) for p in ev.problems]
    key = choose_gateway(ev.translation, gateway)
    if key is None:
        what = f"ModelGateway {gateway!r}" if gateway else "any ModelGateway or ModelRoute"
        problems.append(f"no {what} found in {', '.join(paths)}")
        return LocalLoad(None, {}, tuple(problems), ev.loaded.files)
    config = render(ev.translation.gateways[key])
    secrets = [o for o in ev.loaded.objects if isinstance(o, Secret)]
    credentials = resolve_credentials(config, lookup_in(secrets))
    return LocalLoad(config, credentials, tuple(problems), ev.loaded.files)


__all__ = [
    "Evaluation",
    "LocalLoad",
    "ObjectKey",
    "choose_gateway",
    "evaluate",
    "implicit_gateways",
    "load_local",
]
