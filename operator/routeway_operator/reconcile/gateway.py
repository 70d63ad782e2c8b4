"""Reconcile one gateway key: snapshot → translate → render → apply children → statuses (of
the gateway, its routes and its ModelClients: clients.py).

The key may name a gateway that does not exist (deleted, or never created): then there is
nothing to apply, but the routes that target it still get their status (GatewayNotFound).

Order of writes, so that pods never start or read a half-made setup: identity and network
objects, the credentials Secret, the config shards, the config ConfigMap (the manifest, last
of the config objects), then the Deployment. When rendering fails, nothing of the config is
touched: the last good ConfigMap keeps serving and the gateway says RenderFailed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Hashable, Mapping, Sequence

import kopf
from pydantic import ValidationError

from routeway.configstore import (
    REVISION_ANNOTATION,
    ConfigTooLarge,
    encode_config,
    manifest_shards,
    manifest_slot,
)
from routeway.credentials import credential_refs, resolve_credentials, secret_value
from routeway.lastgood import translate_keeping_last_good
from routeway.proxyconfig import ProxyConfig
from routeway.render import render
from routeway.resources import ModelGateway, ModelRoute, Secret
from routeway.rollout.serving import serve_rollouts
from routeway.status import (
    REASON_APPLY_FAILED,
    REASON_PENDING,
    REASON_RENDER_FAILED,
    Outcome,
    gateway_status,
    not_programmed,
    now_rfc3339,
    programmed,
    route_status,
)
from routeway.translate import NsName, ObjectKey, Translation
from routeway_operator import builders
from routeway_operator.apply import OwnerCheck, OwnerGone
from routeway_operator.inventory import Entry, snapshot_gateway
from routeway_operator.kube import ApiError, path_for
from routeway_operator.reconcile import clients, rollouts, statuses
from routeway_operator.reconcile.backend import reconcile_backend
from routeway_operator.reconcile.kept_keys import KEPT_REASON, Kept, kept_credentials, with_kept_keys
from routeway_operator.reconcile.lastgood import cache_key, last_good_fields, last_good_of
from routeway_operator.state import BACKEND, GATEWAY, OperatorState

log = logging.getLogger("routeway.operator.gateway")


async def reconcile(state: OperatorState, key: Hashable) -> None:
    """The reconciler's entry point: dispatch by the key's kind."""
    assert isinstance(key, ObjectKey)
    if state.relist is not None:
        await state.relist.settled()  # kopf re-listed a kind: first learn what it missed
    if key.kind == GATEWAY:
        await reconcile_gateway(state, (key.namespace, key.name))
    elif key.kind == BACKEND:
        await reconcile_backend(state, (key.namespace, key.name))


async def reconcile_gateway(state: OperatorState, key: NsName) -> None:
    idx = state.indexes
    snap = snapshot_gateway(
        key,
        gateways=idx.gateways,
        routes=idx.routes,
        routes_by_gateway=idx.routes_by_gateway,
        backends=idx.backends,
        secrets=idx.secrets,
        clients=idx.clients,
        clients_by_gateway=idx.clients_by_gateway,
    )
    entries = [e for e in (snap.gateway, *snap.routes, *snap.backends.values(), *snap.clients) if e]
    last_good = last_good_of(statuses.latest(state, e) for e in entries)
    inventory = snap.inventory()
    kept = await kept_credentials(state, key, inventory) if snap.gateway is not None else Kept()
    plain = snap.fingerprint()
    fingerprint = (plain, cache_key(last_good), kept.refs) if plain is not None else None
    cached = state.renders.get(key)
    announced = cached[0][2] if cached is not None and isinstance(cached[0], tuple) else None
    if kept.values and snap.gateway is not None and announced != kept.refs:  # once per change
        await state.events.warning(snap.gateway.reference(), KEPT_REASON, kept.message())
    if fingerprint is not None and cached is not None and cached[0] == fingerprint:
        translation, rendered = cached[1], cached[2]
    else:
        translation, rendered = translate_keeping_last_good(with_kept_keys(inventory, kept), last_good), None
    gateway = snap.gateway.model if snap.gateway and isinstance(snap.gateway.model, ModelGateway) else None
    previous = state.revisions.get(key) or (
        snap.gateway.status.get("configRevision") if snap.gateway else None
    )
    config: ProxyConfig | None = None
    plan: rollouts.RolloutPlan | None = None
    failure: kopf.TemporaryError | kopf.PermanentError | None = None
    outcome = Outcome(previous, not_programmed(REASON_PENDING, "not applied yet"))
    if gateway is None:
        state.revisions.pop(key, None)
        state.renders.pop(key, None)
    else:
        try:
            config = rendered if rendered is not None else render(translation.gateways[key])
            if fingerprint is not None:
                state.renders[key] = (fingerprint, translation, config)
            # The rollouts decide what each route serves (its arms); the plain render is
            # what the specs ask for, cached above, and never served as such.
            latest = [statuses.latest(state, e) for e in snap.routes]
            plan = await rollouts.plan_rollouts(state, key, gateway, latest, config)
            config = serve_rollouts(config, plan.served)
            await rollouts.store_revisions(state, plan)
            await apply_gateway(state, gateway, config, kept)
        except OwnerGone:
            log.info("gateway %s/%s is gone; its children are left to the garbage collector", *key)
            state.revisions.pop(key, None)
            return
        except (ValueError, ValidationError, ConfigTooLarge) as exc:
            config = None
            plan = None
            state.renders.pop(key, None)
            failure = kopf.PermanentError(f"config cannot be rendered: {exc}")
            outcome = Outcome(previous, not_programmed(REASON_RENDER_FAILED, str(failure)))
        except kopf.TemporaryError as exc:
            failure, plan = exc, None
            outcome = Outcome(previous, not_programmed(REASON_PENDING, str(exc)))
        except kopf.PermanentError as exc:
            failure, plan = exc, None
            outcome = Outcome(previous, not_programmed(REASON_APPLY_FAILED, str(exc)))
        else:
            if state.revisions.get(key) != config.revision:
                state.metrics.config_revisions.inc()
            state.revisions[key] = config.revision
            outcome = Outcome(config.revision, programmed(config.revision, "is applied"))
    views = plan.views() if plan is not None else {}
    proxies = rollouts.proxies_current(state, key, outcome.revision)
    await clients.refresh_usage(state, key, gateway, clients.attached_clients(translation, key))
    # A transient failure is the gateway's alone to report: its routes and clients keep the
    # status they have (their observedGeneration says what it reflects) until the retry
    # decides, so an API brownout does not turn into one status write per route, twice.
    members = failure is None or isinstance(failure, kopf.PermanentError)
    routes, client_entries = (snap.routes, snap.clients) if members else ((), ())
    await report(state, snap.gateway, routes, translation, config, outcome, views, proxies, client_entries)
    if plan is not None:
        await rollouts.finish_rollouts(state, plan, outcome.revision)
    if failure is not None:
        raise failure


async def report(
    state: OperatorState,
    gateway_entry: Entry | None,
    routes: Sequence[Entry],
    translation: Translation,
    config: ProxyConfig | None,
    outcome: Outcome,
    views: Mapping[NsName, rollouts.RolloutView] | None = None,
    proxies: int | None = None,
    client_entries: Sequence[Entry] = (),
) -> None:
    """Statuses of the gateway, its routes and its clients, and the Events their transitions deserve.
    `views`: the rollouts applied in this reconcile (a route without one shows its previous
    rollout state, unchanged); `proxies`: ready proxy pods serving `outcome.revision`."""
    now = now_rfc3339()
    items = []
    rendered = {(r.namespace, r.name): r for r in config.routes} if config is not None else {}
    for entry in map(functools.partial(statuses.latest, state), routes):
        view = (views or {}).get(entry.key) or rollouts.unchanged_view(entry)
        desired = route_status(
            entry,
            translation.conditions.get(entry.object_key, ()),
            translation.attachments.get(entry.object_key),
            rendered.get(entry.key),
            outcome,
            now,
            rollout=view.condition,
            serving=translation.serving_older.get(entry.object_key),
        )
        desired |= last_good_fields(entry, translation)
        if view.document is not None:
            desired["rollout"] = view.document
        await statuses.post_condition_events(state, entry, desired)
        items.append((entry, desired))
    key = gateway_entry.key if gateway_entry is not None else None
    for entry, desired in clients.client_items(state, key, client_entries, translation, config, outcome, now):
        desired |= last_good_fields(entry, translation)
        await statuses.post_condition_events(state, entry, desired)
        items.append((entry, desired))
    if gateway_entry is not None:
        gateway_entry = statuses.latest(state, gateway_entry)
        gateway = gateway_entry.model if isinstance(gateway_entry.model, ModelGateway) else None
        address = builders.gateway_address(gateway) if gateway is not None else None
        desired = gateway_status(
            gateway_entry,
            gateway,
            translation.conditions.get(gateway_entry.object_key, ()),
            outcome,
            deployment=statuses.deployment_of(state, gateway_entry),
            address=address,
            routes=sum(
                1
                for key, gw in translation.attachments.items()
                if gw == gateway_entry.key and key.kind == ModelRoute.KIND
            ),
            now=now,
            proxies_current=proxies,
        )
        desired |= last_good_fields(gateway_entry, translation)
        await statuses.post_condition_events(state, gateway_entry, desired)
        if (
            config is not None
            and outcome.revision
            and gateway_entry.status.get("configRevision") != outcome.revision
        ):
            await state.events.normal(
                gateway_entry.reference(),
                "ConfigApplied",
                f"config revision {outcome.revision} applied: {len(config.routes)} routes, "
                f"{len(config.backends)} backends",
            )
        items.append((gateway_entry, desired))
    await statuses.write_statuses(state, items)


async def fetch_credentials(
    state: OperatorState, config: ProxyConfig, kept: Kept | None = None
) -> dict[str, str]:
    """Read the referenced Secrets now (values are never cached in the operator's memory);
    `kept`: the last good values of keys their Secret lost (reconcile.kept_keys)."""
    secrets: dict[NsName, Secret | None] = {}
    for ref in credential_refs(config):
        namespace, name, _ = ref.split("/", 2)
        if (namespace, name) in secrets:
            continue
        try:
            doc = await state.api.get(path_for("v1", "secrets", namespace, name))
        except ApiError as exc:
            raise exc.to_kopf(f"reading Secret {namespace}/{name}") from None
        secrets[(namespace, name)] = Secret.model_validate(doc) if doc else None

    def lookup(namespace: str, name: str, key: str) -> str | None:
        secret = secrets.get((namespace, name))
        value = secret_value(secret, key) if secret is not None else None
        if value is None and secret is not None and kept is not None:
            value = kept.values.get(f"{namespace}/{name}/{key}")
        return value

    return resolve_credentials(config, lookup)


async def apply_gateway(
    state: OperatorState, gateway: ModelGateway, config: ProxyConfig, kept: Kept | None = None
) -> None:
    applier = state.applier
    verdict: list[bool] = []

    async def owner_exists() -> bool:
        if not verdict:
            path = path_for(gateway.api_version, gateway.PLURAL, gateway.namespace, gateway.name)
            try:
                current = await state.api.get(path)
            except ApiError as exc:
                raise exc.to_kopf(f"reading ModelGateway {gateway.namespace}/{gateway.name}") from None
            alive = current is not None and not current.get("metadata", {}).get("deletionTimestamp")
            verdict.append(
                alive and current is not None and current["metadata"].get("uid") == gateway.metadata.uid
            )
        return verdict[0]

    workload = builders.build_workload(gateway, state.settings)
    deployment = workload.pop()
    for obj in workload:
        await applier.apply(obj, owner_check=owner_exists)
    credentials = await fetch_credentials(state, config, kept)
    await applier.apply(builders.build_secret(gateway, credentials), owner_check=owner_exists)
    await apply_config(state, gateway, config, owner_exists)
    await applier.apply(deployment, owner_check=owner_exists)


async def apply_config(
    state: OperatorState, gateway: ModelGateway, config: ProxyConfig, owner_check: OwnerCheck
) -> None:
    """Write the config: shards first (into the slot the live manifest does not use), then the
    ConfigMap naming them, then remove shards neither the new nor the previous manifest uses.

    Stale shards are looked for (one LIST) after a write, and once per gateway after the
    operator starts (`state.shards_swept`): an operator stopped between writing the ConfigMap
    and this cleanup left shards that nothing names, and finds the ConfigMap already as desired
    when it comes back. Not on every reconcile: a resync of 1,000 unchanged gateways must not
    list ConfigMaps 1,000 times."""
    names = builders.ChildNames.of(gateway.name)
    gw_key = (gateway.namespace, gateway.name)
    swept = gw_key in state.shards_swept
    body = config.to_json()
    budget = state.settings.configmap_budget
    encoded = encode_config(body, config.revision, names.configmap, budget=budget)
    if not encoded.shards:
        desired = builders.build_config_map(gateway, config.revision, encoded.data)
        if await state.applier.apply(desired, owner_check=owner_check) or not swept:
            await remove_stale_shards(state, gateway, keep=set())
            state.shards_swept.add(gw_key)
        return
    path = path_for("v1", "configmaps", gateway.namespace, names.configmap)
    try:
        current = await state.api.get(path)
    except ApiError as exc:
        raise exc.to_kopf(f"reading ConfigMap {gateway.namespace}/{names.configmap}") from None
    current_data = (current or {}).get("data") or {}
    current_revision = ((current or {}).get("metadata", {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    live_slot = manifest_slot(current_data)
    if current_revision == config.revision and live_slot is not None:
        slot = live_slot  # unchanged: rebuild the identical set, which writes nothing
    else:
        slot = "b" if live_slot == "a" else "a"
    encoded = encode_config(body, config.revision, names.configmap, slot=slot, budget=budget)
    for name, binary in encoded.shards:
        shard = builders.build_shard(gateway, config.revision, name, binary)
        await state.applier.apply(shard, owner_check=owner_check)
    manifest = builders.build_config_map(gateway, config.revision, encoded.data)
    if await state.applier.apply(manifest, owner_check=owner_check):
        keep = {n for n, _ in encoded.shards} | manifest_shards(current_data)
        await remove_stale_shards(state, gateway, keep=keep)
        state.shards_swept.add(gw_key)
    elif not swept:
        # Unchanged since before a restart: keep this manifest's shards and every shard of the
        # other slot (a proxy may still be reading the previous set), drop the rest — the tail
        # of this slot from two revisions ago (a3..a5 when the live set is a0..a2).
        other = "b" if slot == "a" else "a"
        await remove_stale_shards(state, gateway, keep={n for n, _ in encoded.shards}, keep_slot=other)
        state.shards_swept.add(gw_key)


async def remove_stale_shards(
    state: OperatorState, gateway: ModelGateway, keep: set[str], keep_slot: str | None = None
) -> None:
    """Delete the gateway's shard ConfigMaps not in `keep` (nor, with `keep_slot`, of that
    slot: `<configmap>-<slot><index>`)."""
    names = builders.ChildNames.of(gateway.name)
    selector = f"{builders.GATEWAY_LABEL}={builders.common_labels(gateway)[builders.GATEWAY_LABEL]}"
    try:
        listing = await state.api.get(
            path_for("v1", "configmaps", gateway.namespace), params={"labelSelector": selector}
        )
    except ApiError as exc:
        raise exc.to_kopf("listing config shards") from None
    slot_prefix = f"{names.configmap}-{keep_slot}" if keep_slot else None
    for item in (listing or {}).get("items") or []:
        name = item.get("metadata", {}).get("name", "")
        if not name.startswith(f"{names.configmap}-") or name in keep:
            continue
        if slot_prefix and name.startswith(slot_prefix) and name[len(slot_prefix) :].isdigit():
            continue
        shard = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"namespace": gateway.namespace, "name": name},
        }
        await state.applier.delete(shard)
