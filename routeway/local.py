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

    @property
    def blocking(self) -> bool:
        """Parse-level problems: the files as a whole are not a valid set of objects."""
        return bool(self.loaded.problems)


@dataclass(frozen=True)
class LocalLoad:
    """What `routeway serve` gets from one read of the files.

    `blocking` problems (a file that cannot be read or parsed, an object that does not match
    its schema, no gateway to serve) mean the files are mid-edit or wrong as a whole: serve
    keeps its last good config. Translation findings (a missing backend, a model-name conflict,
    a revoked key Secret) are not blocking: like the operator, serve renders everything that is
    valid, the affected object alone loses out, and the findings are shown as warnings.
    """

    config: ProxyConfig | None  # None when the chosen gateway could not be rendered
    credentials: dict[str, str]  # credentialRef → value, from Secrets in the same files
    problems: tuple[str, ...]  # one line per problem, blocking first; empty when all is valid
    watched: tuple[str, ...]  # files that were read
    blocking: bool = False  # True: do not replace a good config with this one


def implicit_gateways(loaded: LoadResult) -> list[ModelGateway]:
    if any(isinstance(o, ModelGateway) for o in loaded.objects) or any(
        k.kind == ModelGateway.KIND for k in loaded.invalid
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


def evaluate(paths: Sequence[str], stdin: IO[str] | None = None, *, skip_foreign: bool = False) -> Evaluation:
    """`skip_foreign`: leave out documents that are not Routeway's (see routeway.manifests)."""
    loaded = load_manifests(paths, stdin, skip_foreign=skip_foreign)
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


class GatewayChoiceError(ValueError):
    """No gateway, or several and no `--gateway` to pick one: the message says which."""


def choose_gateway(translation: Translation, wanted: str | None) -> NsName:
    """`--gateway` takes `name` or `namespace/name`; without it the files must hold exactly one
    gateway. Silently picking one of several would drop the other gateways' routes."""
    keys = sorted(translation.gateways)
    names = ", ".join(f"{ns}/{name}" for ns, name in keys)
    if wanted:
        if "/" in wanted:
            ns, name = wanted.split("/", 1)
            matches = [(ns, name)] if (ns, name) in translation.gateways else []
        else:
            matches = [k for k in keys if k[1] == wanted]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise GatewayChoiceError(f"no ModelGateway {wanted!r} found (gateways: {names or 'none'})")
        raise GatewayChoiceError(f"--gateway {wanted!r} is ambiguous: name it as NAMESPACE/NAME ({names})")
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise GatewayChoiceError("no ModelGateway or ModelRoute found")
    raise GatewayChoiceError(f"the files define several gateways ({names}): choose one with --gateway")


def load_local(paths: Sequence[str], gateway: str | None = None, *, skip_foreign: bool = False) -> LocalLoad:
    ev = evaluate(paths, skip_foreign=skip_foreign)
    problems = [str(p) for p in ev.problems]
    try:
        key = choose_gateway(ev.translation, gateway)
    except GatewayChoiceError as exc:
        problems.append(f"{', '.join(paths)}: {exc}")
        return LocalLoad(None, {}, tuple(problems), ev.loaded.files, blocking=True)
    config = render(ev.translation.gateways[key])
    secrets = [o for o in ev.loaded.objects if isinstance(o, Secret)]
    credentials = resolve_credentials(config, lookup_in(secrets))
    return LocalLoad(config, credentials, tuple(problems), ev.loaded.files, blocking=ev.blocking)


__all__ = [
    "Evaluation",
    "GatewayChoiceError",
    "LocalLoad",
    "ObjectKey",
    "choose_gateway",
    "evaluate",
    "implicit_gateways",
    "load_local",
]
