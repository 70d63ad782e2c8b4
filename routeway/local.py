"""Local mode: manifests on disk → the same translation the operator runs → one ProxyConfig.

`routeway validate`, `routeway render` and `routeway serve` all go through `evaluate`, so what
a GitOps pipeline reviews is exactly what a cluster would serve.

Implicit gateways: when the files hold no ModelGateway at all (an application team's folder
of routes, or the quick start), every gateway the routes name is assumed to exist with
default settings and open to routes from all namespaces. As soon as one ModelGateway is
present, gateways are taken as written and a route naming a missing one is an error.

Secrets kept out of Git: a Secret the files do not hold is found when an ExternalSecret or a
SealedSecret in them declares it (read with `skip_foreign`, see routeway.secretsources), and
with `assume_secrets` (validate and render only) any other one the files refer to is taken
to exist in the cluster, each key asked for. SOPS-encrypted Secrets count by their key names.
Which Secrets were taken on trust, declared or encrypted is said in `notes`, never silently.
`load_local` (serve) needs values: it reports every credential it cannot fill, an encrypted
value first of all, and never sends ciphertext upstream.

Last good versions (serve, issue 14 item 3): `load_local` takes the `Memory` of the previous
load it served. An object whose new version has a problem — a translation finding, a schema
error, or a file that cannot be read or parsed now, for the objects that file held — is served
in its last good version (routeway.lastgood) and reported; the rest of the change applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from routeway.credentials import Lookup, credential_refs, lookup_in, resolve_credentials
from routeway.lastgood import translate_keeping_last_good
from routeway.local_memory import Memory, keep_last_good_secrets, secret_key, unreadable_objects
from routeway.manifests import LoadResult, Problem, load_manifests
from routeway.proxyconfig import ProxyConfig
from routeway.render import render
from routeway.resources import (
    AllowedRoutes,
    ModelBackend,
    ModelGateway,
    ModelGatewaySpec,
    ModelRoute,
    ObjectMeta,
    RouteNamespaces,
    Secret,
)
from routeway.secretsources import DeclaredSecret, keys_text
from routeway.translate import Inventory, NsName, ObjectKey, Translation


@dataclass(frozen=True, slots=True)
class MissingSecret:
    """A Secret the files refer to but neither hold nor declare, and what is asked of it."""

    namespace: str
    name: str
    keys: tuple[str, ...]  # the keys backends name, sorted
    client_keys: bool  # a gateway takes its client API keys from it (all of them, names unknown)

    def __str__(self) -> str:
        wanted = [keys_text(self.keys)] if self.keys else []
        if self.client_keys:
            wanted.append("client keys")
        return f"{self.namespace}/{self.name} ({'; '.join(wanted)})"


@dataclass(frozen=True)
class Evaluation:
    loaded: LoadResult
    translation: Translation
    problems: tuple[Problem, ...]  # parse problems, then translation findings, in file order
    missing_secrets: tuple[MissingSecret, ...] = ()  # referenced, not in the files nor declared
    secrets_assumed: bool = False  # `assume_secrets`: the missing ones resolved as existing

    @property
    def blocking(self) -> bool:
        """Parse-level problems: the files as a whole are not a valid set of objects."""
        return bool(self.loaded.problems)

    def notes(self) -> list[str]:
        """Lines for stderr about Secrets that were not read as plain Secrets: encrypted ones,
        declared ones and missing ones (assumed, or a hint at `--assume-secrets`). Names and
        key names only: nothing here comes from a value."""
        lines = []
        encrypted = sorted(
            f"{o.namespace}/{o.name}" for o in self.loaded.objects if isinstance(o, Secret) and o.encrypted
        )
        if encrypted:
            lines.append(
                f"{len(encrypted)} SOPS-encrypted Secret(s), checked by key name, values not read: "
                + ", ".join(encrypted)
            )
        if self.loaded.declared:
            made = sorted(str(d) for d in self.loaded.declared)
            lines.append(
                f"{len(made)} Secret(s) made in the cluster from other documents: " + ", ".join(made)
            )
        if self.missing_secrets:
            listed = ", ".join(str(m) for m in self.missing_secrets)
            if self.secrets_assumed:
                lines.append(
                    f"assumed to exist in the cluster: {len(self.missing_secrets)} Secret(s): {listed}"
                )
            else:
                lines.append(
                    f"{len(self.missing_secrets)} referenced Secret(s) are not in the files: {listed}; "
                    "--assume-secrets takes them as existing in the cluster"
                )
        return lines


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
    # What the rollout adapter (routeway.serve_rollouts) reads beside the config: every
    # ModelRoute of the files (their strategy) and the ids of the ModelBackends that exist.
    routes: tuple[ModelRoute, ...] = ()
    backend_ids: frozenset[str] = frozenset()
    # The files' Secrets, for credentials the config does not name but a rollout arm does (an
    # undo to a revision whose backend spec named another Secret).
    lookup: Lookup | None = field(default=None, compare=False, repr=False)
    # What the next load needs to keep each object's last good version.
    memory: Memory | None = field(default=None, compare=False, repr=False)


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


def missing_secrets(objects: Iterable[object], present: Iterable[NsName]) -> tuple[MissingSecret, ...]:
    """Secrets that backends (apiKeySecretRef) and gateways (auth) name but that are not `present`."""
    known = set(present)
    keys: dict[NsName, set[str]] = {}
    client: set[NsName] = set()
    for obj in objects:
        if isinstance(obj, ModelBackend) and obj.spec.api_key_secret_ref is not None:
            ref = obj.spec.api_key_secret_ref
            keys.setdefault((obj.namespace, ref.name), set()).add(ref.key)
        elif isinstance(obj, ModelGateway) and obj.spec.auth is not None:
            key = (obj.namespace, obj.spec.auth.api_key_secret_ref.name)
            keys.setdefault(key, set())
            client.add(key)
    return tuple(
        MissingSecret(ns, name, tuple(sorted(wanted)), (ns, name) in client)
        for (ns, name), wanted in sorted(keys.items())
        if (ns, name) not in known
    )


def declared_keys(declared: Iterable[DeclaredSecret]) -> dict[NsName, frozenset[str] | None]:
    """Keys per declared Secret; several documents making one Secret add up, and one that does
    not tell its keys makes them all unknown (None)."""
    out: dict[NsName, frozenset[str] | None] = {}
    for d in declared:
        key = (d.namespace, d.name)
        before = out.get(key, frozenset())
        out[key] = None if before is None or d.keys is None else before | d.keys
    return out


def evaluate(
    paths: Sequence[str],
    stdin: IO[str] | None = None,
    *,
    skip_foreign: bool = False,
    assume_secrets: bool = False,
    memory: Memory | None = None,
) -> Evaluation:
    """`skip_foreign`: leave out documents that are not Routeway's (see routeway.manifests).
    `assume_secrets`: a Secret referred to but not in the files (nor declared by them) exists
    in the cluster with every key asked of it. A Secret that is in the files is taken as
    written either way: a key it lacks is still SecretKeyNotFound. `memory`: the last served
    load's (serve only): objects with a problem keep their last good versions."""
    loaded = load_manifests(paths, stdin, skip_foreign=skip_foreign)
    implicit = implicit_gateways(loaded)
    secret_problems: list[Problem] = []
    if memory is not None:
        kept = unreadable_objects(loaded, memory)
        if kept:
            loaded = replace(loaded, invalid={**loaded.invalid, **kept})
        # The gateways implied by the routes that will serve, last good versions included.
        older = tuple(memory.good[k] for k in loaded.invalid if k in memory.good)
        implicit = implicit_gateways(replace(loaded, objects=(*loaded.objects, *older)))
        loaded, secret_problems = keep_last_good_secrets(loaded, (*loaded.objects, *older, *implicit), memory)
    objects = [*loaded.objects, *implicit]
    in_files = {(o.namespace, o.name) for o in loaded.objects if isinstance(o, Secret)}
    in_files |= {(k.namespace, k.name) for k in loaded.invalid if k.kind == "Secret"}
    declared = {k: v for k, v in declared_keys(loaded.declared).items() if k not in in_files}
    missing = missing_secrets(objects, [*in_files, *declared])
    base = Inventory.from_objects(objects, {k: v for k, v in loaded.invalid.items() if k.kind != "Secret"})
    assumed = {k for k, v in declared.items() if v is None}
    if assume_secrets:
        assumed |= {(m.namespace, m.name) for m in missing}
    inventory = replace(
        base,
        secret_keys={**{k: v for k, v in declared.items() if v is not None}, **base.secret_keys},
        assumed_secrets=frozenset(assumed),
    )
    translation = translate_keeping_last_good(inventory, memory.good if memory is not None else None)
    problems = [*loaded.problems, *secret_problems]
    for key, findings in translation.findings.items():
        if key in loaded.invalid and key not in translation.serving_older:
            continue  # already reported field by field while parsing
        source = loaded.sources.get(key) or (memory.sources.get(key) if memory else None) or "<implicit>"
        for f in findings:
            problems.append(Problem(source, str(key), f.field, f"{f.reason}: {f.message}"))
    return Evaluation(loaded, translation, tuple(problems), missing, assume_secrets)


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


def load_local(
    paths: Sequence[str],
    gateway: str | None = None,
    *,
    skip_foreign: bool = False,
    memory: Memory | None = None,
) -> LocalLoad:
    """`memory`: what the last served load left (None before the first one). Without it a file
    that does not parse blocks the whole load, as there is no last good version of anything;
    with it only the objects with a problem keep their last good versions."""
    ev = evaluate(paths, skip_foreign=skip_foreign, memory=memory)
    problems = [str(p) for p in ev.problems]
    try:
        key = choose_gateway(ev.translation, gateway)
    except GatewayChoiceError as exc:
        problems.append(f"{', '.join(paths)}: {exc}")
        return LocalLoad(None, {}, tuple(problems), ev.loaded.files, blocking=True)
    config = one_machine(render(ev.translation.gateways[key]))
    secrets = [o for o in ev.loaded.objects if isinstance(o, Secret)]
    lookup = lookup_in(secrets)
    credentials = resolve_credentials(config, lookup)
    problems += [str(p) for p in unusable_credentials(ev, key, config, credentials)]
    # What serves: each object as loaded, or its last good version where that one serves.
    served = [*ev.loaded.objects, *(ev.translation.good[k] for k in ev.translation.serving_older)]
    served_routes = {(o.namespace, o.name): o for o in served if isinstance(o, ModelRoute)}
    routes = tuple(served_routes[k] for k in sorted(served_routes))
    backend_ids = frozenset(f"{o.namespace}/{o.name}" for o in served if isinstance(o, ModelBackend))
    good = ev.translation.good
    kept = {secret_key(s): s for s in secrets}  # each Secret's last good version, as served
    sources = {**(memory.sources if memory is not None else {}), **ev.loaded.sources}
    return LocalLoad(
        config,
        credentials,
        tuple(problems),
        ev.loaded.files,
        blocking=ev.blocking and memory is None,
        routes=routes,
        backend_ids=backend_ids,
        lookup=lookup,
        memory=Memory(good, {k: v for k, v in sources.items() if k in good or k in kept}, kept),
    )


def one_machine(config: ProxyConfig) -> ProxyConfig:
    """`config` as `routeway serve` serves it: one process group on one machine, whose
    workers share one table of budgets, so without Redis that group enforces each whole limit
    (`gateway.limits.replicas` 1) whatever the ModelGateway's `replicas` says for a cluster."""
    limits = config.gateway.limits
    if limits.replicas == 1:
        return config
    gateway = config.gateway.model_copy(update={"limits": limits.model_copy(update={"replicas": 1})})
    return config.model_copy(update={"gateway": gateway}).with_revision()


def unusable_credentials(
    ev: Evaluation, gateway: NsName, config: ProxyConfig, credentials: Mapping[str, str]
) -> list[Problem]:
    """Why credentials the config names have no value here, one problem per Secret.

    Translation checks key names, which is all a cluster needs to be told; serving needs the
    values. A SOPS-encrypted Secret has none that can be sent (its `ENC[…]` strings are
    ciphertext), and one made in the cluster from an ExternalSecret or a SealedSecret has none
    in the files. Not blocking, like any finding on one object: the backend answers as for a
    missing credential and a gateway's client authentication fails closed, which these lines
    explain."""
    wanted: dict[NsName, set[str]] = {}
    for ref in credential_refs(config):
        if ref not in credentials:
            namespace, name, key = ref.split("/", 2)
            wanted.setdefault((namespace, name), set()).add(key)
    auth = ev.translation.gateways[gateway].gateway.spec.auth
    if auth is not None:  # a declared Secret with unknown keys gives the gateway no key refs at all
        wanted.setdefault((gateway[0], auth.api_key_secret_ref.name), set())
    secrets = {(o.namespace, o.name): o for o in ev.loaded.objects if isinstance(o, Secret)}
    declared = {(d.namespace, d.name): d for d in reversed(ev.loaded.declared)}  # the first one
    problems = []
    for (namespace, name), keys in sorted(wanted.items()):
        what = keys_text(keys) if keys else "client keys"
        secret = secrets.get((namespace, name))
        if secret is not None:
            source = ev.loaded.sources[ObjectKey("Secret", namespace, name)]
            if secret.encrypted:
                message = (
                    f"encrypted with SOPS ({what}): routeway serve cannot send an encrypted value "
                    "upstream; decrypt it first (sops --decrypt) and serve the decrypted copy, kept out of Git"
                )
            elif keys:
                message = f"no usable value for {what}: not UTF-8 text, or SOPS ciphertext"
            else:
                continue
            problems.append(Problem(source, f"Secret/{name}", "", message))
        elif (namespace, name) in declared:
            d = declared[(namespace, name)]
            problems.append(
                Problem(
                    d.source,
                    d.by,
                    "",
                    f"makes Secret {namespace}/{name} in the cluster only: routeway serve has no "
                    f"value for {what}; give it a plain Secret of that name, kept out of Git",
                )
            )
    return problems


__all__ = [
    "Evaluation",
    "GatewayChoiceError",
    "LocalLoad",
    "Memory",
    "MissingSecret",
    "ObjectKey",
    "choose_gateway",
    "evaluate",
    "implicit_gateways",
    "load_local",
    "missing_secrets",
    "unusable_credentials",
]
