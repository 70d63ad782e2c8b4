"""Translate a snapshot of resources into per-gateway routing IR plus per-object verdicts.

Pure and deterministic: the same `Inventory` always yields the same `Translation`, whatever
order its mappings were filled in. Both the operator (from kopf index snapshots) and local
mode (from files) call this, so a route behaves the same in a cluster and on a laptop.

Invalid objects never poison the rest: each problem is a `Finding` on that object alone, and
the object is left out (or, for a route missing one of several backends, rendered with the
backends that do resolve) while everything else renders. `routeway.status` says which
conditions and reasons the findings become.

Conflict rule: when two routes claim the same public model on one gateway, the route already
serving it keeps it (`Inventory.holders`, from the last good versions: routeway.lastgood), so an
edit or a new route can never take a served name over; the route that newly claims it is the one
in conflict. Only when no claimant is serving it (first load, or no last good state) does the
older one (by creationTimestamp, then namespace/name) win, as Gateway API resolves conflicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple, TypeAlias

from routeway import status as st
from routeway.gcpause import gc_paused
from routeway.resources import ModelBackend, ModelClient, ModelGateway, ModelRoute, Secret

NsName: TypeAlias = tuple[str, str]


class ObjectKey(NamedTuple):
    """Identifies an object across kinds; a tuple so sorting and hashing stay in C."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def qualified(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Inventory:
    """Everything translation may look at. Secrets contribute key names only, never values."""

    backends: Mapping[NsName, ModelBackend] = field(default_factory=dict)
    routes: Mapping[NsName, ModelRoute] = field(default_factory=dict)
    gateways: Mapping[NsName, ModelGateway] = field(default_factory=dict)
    secret_keys: Mapping[NsName, frozenset[str]] = field(default_factory=dict)
    invalid: Mapping[ObjectKey, str] = field(default_factory=dict)  # failed to parse → why
    clients: Mapping[NsName, ModelClient] = field(default_factory=dict)
    # Secrets known to exist whose key names are not known (local mode: kept out of the files,
    # or made by a controller from data elsewhere): any key of theirs resolves. The operator
    # reads real Secrets and leaves this empty.
    assumed_secrets: frozenset[NsName] = frozenset()
    # Which route serves each (gateway, public model) now: it keeps the name against any other
    # claimant, older or not (routeway.lastgood fills it from the last good versions).
    holders: Mapping[tuple[NsName, str], NsName] = field(default_factory=dict)

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[ModelBackend | ModelRoute | ModelGateway | ModelClient | Secret],
        invalid: Mapping[ObjectKey, str] | None = None,
    ) -> Inventory:
        backends: dict[NsName, ModelBackend] = {}
        routes: dict[NsName, ModelRoute] = {}
        gateways: dict[NsName, ModelGateway] = {}
        secrets: dict[NsName, frozenset[str]] = {}
        clients: dict[NsName, ModelClient] = {}
        for obj in objects:
            key = (obj.namespace, obj.name)
            if isinstance(obj, ModelBackend):
                backends[key] = obj
            elif isinstance(obj, ModelRoute):
                routes[key] = obj
            elif isinstance(obj, ModelGateway):
                gateways[key] = obj
            elif isinstance(obj, ModelClient):
                clients[key] = obj
            else:
                secrets[key] = frozenset(obj.data) | frozenset(obj.string_data)
        return cls(backends, routes, gateways, secrets, dict(invalid or {}), clients=clients)


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    backend: ModelBackend
    model: str  # the name sent upstream
    weight: int


@dataclass(frozen=True, slots=True)
class RouteIR:
    route: ModelRoute
    targets: tuple[ResolvedTarget, ...]
    fallbacks: tuple[ResolvedTarget, ...]


@dataclass(frozen=True, slots=True)
class ClientIR:
    client: ModelClient

    @property
    def id(self) -> str:
        return f"{self.client.namespace}/{self.client.name}"


@dataclass(frozen=True, slots=True)
class GatewayIR:
    gateway: ModelGateway
    routes: tuple[RouteIR, ...]  # sorted by public model name
    client_key_refs: tuple[str, ...]
    require_client_key: bool
    clients: tuple[ClientIR, ...] = ()  # accepted ModelClients, sorted by id


@dataclass(frozen=True)
class Translation:
    gateways: Mapping[NsName, GatewayIR]
    findings: Mapping[ObjectKey, tuple[st.Finding, ...]]
    conditions: Mapping[ObjectKey, tuple[st.Condition, ...]]  # Accepted + ResolvedRefs per object
    attachments: Mapping[ObjectKey, NsName]  # accepted route or client → its gateway
    # Filled by routeway.lastgood (empty from `translate` alone): objects translated in their
    # last good version because the new one has a problem, with the generation served; and
    # every existing object's last good version after this translation, to pass next time.
    serving_older: Mapping[ObjectKey, int | None] = field(default_factory=dict)
    good: Mapping[ObjectKey, ModelBackend | ModelRoute | ModelGateway | ModelClient] = field(
        default_factory=dict
    )
    # Objects whose *served* version has findings of its own (routeway.lastgood fills it; for
    # `translate` alone, every object with findings): nothing of theirs is usable as written,
    # so no generation of theirs may be reported as serving.
    troubled: frozenset[ObjectKey] = frozenset()

    @cached_property
    def routes_with_targets(self) -> frozenset[ObjectKey]:
        """Routes rendered with at least one target: the ones that really serve (a route whose
        every backend is missing renders, answers nothing, and serves no generation)."""
        return frozenset(
            ObjectKey(ModelRoute.KIND, r.route.namespace, r.route.name)
            for gateway in self.gateways.values()
            for r in gateway.routes
            if r.targets
        )


def translate(inv: Inventory) -> Translation:
    with gc_paused():
        return _translate(inv)


def _translate(inv: Inventory) -> Translation:
    findings: dict[ObjectKey, list[st.Finding]] = {}
    for key, message in inv.invalid.items():
        findings.setdefault(key, []).append(st.Finding(st.ACCEPTED, st.REASON_INVALID, "", message))

    usable_backends = _check_backends(inv, findings)
    gateway_auth = _check_gateways(inv, findings)
    route_irs, attachments = _translate_routes(inv, usable_backends, findings)
    client_irs = _translate_clients(inv, findings, attachments)

    gateways: dict[NsName, GatewayIR] = {}
    for gw_key in sorted(gateway_auth):
        refs, required = gateway_auth[gw_key]
        routes = tuple(sorted(route_irs.get(gw_key, []), key=lambda r: r.route.spec.model))
        clients = tuple(sorted(client_irs.get(gw_key, []), key=lambda c: c.id))
        gateways[gw_key] = GatewayIR(inv.gateways[gw_key], routes, refs, required, clients)

    all_keys = (
        [ObjectKey(ModelBackend.KIND, *k) for k in inv.backends]
        + [ObjectKey(ModelRoute.KIND, *k) for k in inv.routes]
        + [ObjectKey(ModelGateway.KIND, *k) for k in inv.gateways]
        + [ObjectKey(ModelClient.KIND, *k) for k in inv.clients]
        + list(inv.invalid)
    )
    frozen_findings = {k: tuple(findings.get(k, ())) for k in sorted(set(all_keys))}
    conds = {k: st.conditions_from_findings(f) for k, f in frozen_findings.items()}
    troubled = frozenset(k for k, f in frozen_findings.items() if f)
    return Translation(gateways, frozen_findings, conds, attachments, troubled=troubled)


def _check_backends(
    inv: Inventory, findings: dict[ObjectKey, list[st.Finding]]
) -> dict[NsName, ModelBackend]:
    usable: dict[NsName, ModelBackend] = {}
    for key, backend in sorted(inv.backends.items()):
        ref = backend.spec.api_key_secret_ref
        problem = _secret_problem(inv, backend.namespace, ref.name, ref.key) if ref else None
        if problem:
            reason, message = problem
            findings.setdefault(ObjectKey(ModelBackend.KIND, *key), []).append(
                st.Finding(st.RESOLVED_REFS, reason, "spec.apiKeySecretRef", message)
            )
        else:
            usable[key] = backend
    return usable


def _secret_problem(inv: Inventory, namespace: str, name: str, key: str | None) -> tuple[str, str] | None:
    keys = inv.secret_keys.get((namespace, name))
    if keys is None and (namespace, name) in inv.assumed_secrets:
        return None
    if keys is None:
        return st.REASON_SECRET_NOT_FOUND, f"Secret {name!r} not found in namespace {namespace}"
    if key is not None and key not in keys:
        return st.REASON_SECRET_KEY_NOT_FOUND, f"Secret {name!r} has no key {key!r}"
    if key is None and not keys:
        return st.REASON_SECRET_KEY_NOT_FOUND, f"Secret {name!r} has no keys"
    return None


def _check_gateways(
    inv: Inventory, findings: dict[ObjectKey, list[st.Finding]]
) -> dict[NsName, tuple[tuple[str, ...], bool]]:
    """Client-auth refs per gateway. A gateway whose key Secret is missing fails closed:
    authentication stays required and no key matches, rather than opening the gateway."""
    out: dict[NsName, tuple[tuple[str, ...], bool]] = {}
    for key, gateway in sorted(inv.gateways.items()):
        auth = gateway.spec.auth
        if auth is None:
            out[key] = ((), False)
            continue
        name = auth.api_key_secret_ref.name
        problem = _secret_problem(inv, gateway.namespace, name, None)
        if problem:
            findings.setdefault(ObjectKey(ModelGateway.KIND, *key), []).append(
                st.Finding(st.RESOLVED_REFS, problem[0], "spec.auth.apiKeySecretRef", problem[1])
            )
            out[key] = ((), True)
        else:
            keys = sorted(inv.secret_keys.get((gateway.namespace, name), ()))  # none known if assumed
            out[key] = (tuple(f"{gateway.namespace}/{name}/{k}" for k in keys), True)
    return out


def _route_order(
    holders: Mapping[tuple[NsName, str], NsName],
) -> Callable[[tuple[NsName, ModelRoute]], tuple[bool, str, str, str]]:
    """Claim order: the route serving a (gateway, model) first, then by age, then by name."""

    def order(item: tuple[NsName, ModelRoute]) -> tuple[bool, str, str, str]:
        key, route = item
        serving = holders.get((gateway_of(route), route.spec.model)) == key
        return (not serving, route.metadata.creation_timestamp or "", key[0], key[1])

    return order


def _translate_routes(
    inv: Inventory, usable: Mapping[NsName, ModelBackend], findings: dict[ObjectKey, list[st.Finding]]
) -> tuple[dict[NsName, list[RouteIR]], dict[ObjectKey, NsName]]:
    by_gateway: dict[NsName, list[RouteIR]] = {}
    attachments: dict[ObjectKey, NsName] = {}
    claimed: dict[tuple[NsName, str], ObjectKey] = {}
    for key, route in sorted(inv.routes.items(), key=_route_order(inv.holders)):
        okey = ObjectKey(ModelRoute.KIND, *key)
        mine = findings.setdefault(okey, [])
        gw_key = gateway_of(route)
        rejection = _attachment_problem(inv, route, gw_key)
        if rejection is None and sum(b.weight for b in route.spec.backends) == 0:
            rejection = st.Finding(
                st.ACCEPTED,
                st.REASON_NO_WEIGHT,
                "spec.backends",
                "every backend has weight 0: no traffic could flow",
            )
        if rejection is None and (gw_key, route.spec.model) in claimed:
            owner = claimed[(gw_key, route.spec.model)]
            rejection = st.Finding(
                st.ACCEPTED,
                st.REASON_MODEL_CONFLICT,
                "spec.model",
                f"model {route.spec.model!r} is already served on gateway {gw_key[0]}/{gw_key[1]} "
                f"by ModelRoute {owner.namespace}/{owner.name}",
            )
        if rejection is not None:
            mine.append(rejection)
            continue
        claimed[(gw_key, route.spec.model)] = okey
        attachments[okey] = gw_key
        targets = []
        for i, ref in enumerate(route.spec.backends):
            backend = _resolve_backend(inv, usable, route, ref.name, f"spec.backends[{i}].name", mine)
            if backend is not None:
                targets.append(ResolvedTarget(backend, backend.spec.model or route.spec.model, ref.weight))
        fallbacks = []
        for i, fb in enumerate(route.spec.fallbacks):
            backend = _resolve_backend(inv, usable, route, fb.name, f"spec.fallbacks[{i}].name", mine)
            if backend is not None:
                fallbacks.append(ResolvedTarget(backend, backend.spec.model or route.spec.model, 0))
        by_gateway.setdefault(gw_key, []).append(RouteIR(route, tuple(targets), tuple(fallbacks)))
    return by_gateway, attachments


def gateway_of(obj: ModelRoute | ModelClient) -> NsName:
    ref = obj.spec.gateway_ref
    if ref is None:
        return (obj.namespace, "default")
    return (ref.namespace or obj.namespace, ref.name)


def _translate_clients(
    inv: Inventory, findings: dict[ObjectKey, list[st.Finding]], attachments: dict[ObjectKey, NsName]
) -> dict[NsName, list[ClientIR]]:
    """ModelClients by gateway. Attachment follows the routes' rule (allowedRoutes); a gateway
    without `auth` accepts no client key (AuthDisabled: a key that is never asked for would
    limit nothing); a missing key Secret leaves the client out (its key cannot be checked)."""
    out: dict[NsName, list[ClientIR]] = {}
    for key, client in sorted(inv.clients.items()):
        okey = ObjectKey(ModelClient.KIND, *key)
        mine = findings.setdefault(okey, [])
        gw_key = gateway_of(client)
        problem = _attachment_problem(inv, client, gw_key)
        if problem is None and inv.gateways[gw_key].spec.auth is None:
            problem = st.Finding(
                st.ACCEPTED,
                st.REASON_AUTH_DISABLED,
                "spec.gatewayRef",
                f"ModelGateway {gw_key[0]}/{gw_key[1]} has no spec.auth: it asks no client for a key",
            )
        if problem is not None:
            mine.append(problem)
            continue
        ref = client.spec.key_secret_ref
        secret = _secret_problem(inv, client.namespace, ref.name, ref.key)
        if secret is not None:
            mine.append(st.Finding(st.RESOLVED_REFS, secret[0], "spec.keySecretRef", secret[1]))
            continue
        attachments[okey] = gw_key
        out.setdefault(gw_key, []).append(ClientIR(client))
    return out


def _attachment_problem(inv: Inventory, route: ModelRoute | ModelClient, gw_key: NsName) -> st.Finding | None:
    gateway = inv.gateways.get(gw_key)
    where = f"{gw_key[0]}/{gw_key[1]}"
    if gateway is None:
        if ObjectKey(ModelGateway.KIND, *gw_key) in inv.invalid:
            return st.Finding(
                st.ACCEPTED, st.REASON_GATEWAY_INVALID, "spec.gatewayRef", f"ModelGateway {where} is invalid"
            )
        return st.Finding(
            st.ACCEPTED, st.REASON_GATEWAY_NOT_FOUND, "spec.gatewayRef", f"ModelGateway {where} not found"
        )
    allowed = gateway.spec.allowed_routes.namespaces
    ok = (
        allowed.from_ == "All"
        or (allowed.from_ == "Same" and route.namespace == gateway.namespace)
        or (allowed.from_ == "List" and route.namespace in allowed.names)
    )
    if not ok:
        return st.Finding(
            st.ACCEPTED,
            st.REASON_NOT_ALLOWED,
            "spec.gatewayRef",
            f"ModelGateway {where} does not accept {'routes' if isinstance(route, ModelRoute) else 'clients'} "
            f"from namespace {route.namespace}",
        )
    return None


def _resolve_backend(
    inv: Inventory,
    usable: Mapping[NsName, ModelBackend],
    route: ModelRoute,
    name: str,
    field_path: str,
    out: list[st.Finding],
) -> ModelBackend | None:
    key = (route.namespace, name)
    if key in usable:
        return usable[key]
    if key in inv.backends:
        reason, what = st.REASON_BACKEND_UNRESOLVED, "has unresolved references (see its status)"
    elif ObjectKey(ModelBackend.KIND, *key) in inv.invalid:
        reason, what = st.REASON_BACKEND_INVALID, "is invalid"
    else:
        reason, what = st.REASON_BACKEND_NOT_FOUND, f"not found in namespace {route.namespace}"
    out.append(st.Finding(st.RESOLVED_REFS, reason, field_path, f"ModelBackend {name!r} {what}"))
    return None
