"""Status documents for routes, backends and gateways, and writing them only when they change.

The documents are computed from the translation (Accepted, ResolvedRefs), the outcome of
applying the gateway's config (Programmed) and, for gateways, the proxy Deployment's ready
replicas. Each write is one merge patch of `/status` carrying observedGeneration together
with every condition, so Ready and observedGeneration move in the same write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from routeway.conditions import ACCEPTED, RESOLVED_REFS, Condition
from routeway.proxyconfig import RouteConfig
from routeway.resources import ModelGateway
from routeway.translate import Translation
from routeway_operator import status as st
from routeway_operator.inventory import Entry, first
from routeway_operator.kube import ApiError, path_for
from routeway_operator.state import OperatorState

log = logging.getLogger("routeway.operator.status")

PLURALS = {"ModelRoute": "modelroutes", "ModelBackend": "modelbackends", "ModelGateway": "modelgateways"}


def latest(state: OperatorState, entry: Entry) -> Entry:
    """The entry with the newest status we know: our own last write beats an index that has
    not yet seen it (kopf may lag behind a burst of watch events), so timestamps do not churn."""
    written = state.status_written.get(entry.object_key)
    return dataclasses.replace(entry, status=written) if written is not None else entry


def translated(translation: Translation, entry: Entry) -> tuple[Condition, Condition]:
    conds = {c.type: c for c in translation.conditions.get(entry.object_key, ())}
    accepted = conds.get(ACCEPTED, Condition(ACCEPTED, "Unknown", "Pending", "not translated yet"))
    resolved = conds.get(RESOLVED_REFS, Condition(RESOLVED_REFS, "Unknown", "Pending", "not translated yet"))
    return accepted, resolved


def route_status(
    entry: Entry, translation: Translation, rendered: RouteConfig | None, outcome: st.Outcome, now: str
) -> dict[str, Any]:
    """`rendered`: this route in the config just applied (None when absent or not applied)."""
    accepted, resolved = translated(translation, entry)
    gateway = translation.attachments.get(entry.object_key)
    previous = entry.status
    same_generation = previous.get("observedGeneration") == entry.generation
    weights: str | None = None
    revision: str | None = None
    if gateway is None:
        programmed = st.not_programmed(st.REASON_NOT_ATTACHED, "the route is not attached to a gateway")
    elif outcome.programmed.status != "True":
        if (
            outcome.revision is not None
            and previous.get("configRevision") == outcome.revision
            and same_generation
        ):
            # The new config could not be applied, but the last good one (still in the
            # ConfigMap) serves this very generation: the route stays programmed at it.
            revision, weights = outcome.revision, previous.get("backendWeights")
            programmed = st.programmed(revision, f"serves generation {entry.generation}")
        else:
            programmed = st.not_programmed(outcome.programmed.reason, outcome.programmed.message)
    elif rendered is None or rendered.generation != entry.generation:
        programmed = st.not_programmed(st.REASON_PENDING, "waiting for the gateway's config to be rendered")
    else:
        weights = st.backend_weights((t.backend.split("/", 1)[1], t.weight) for t in rendered.targets)
        revision = outcome.revision or ""
        # The revision that first programmed this generation stays (in the field and in the
        # message), so another route's change does not rewrite every route's status.
        if previous.get("configRevision") and same_generation and previous.get("backendWeights") == weights:
            revision = previous["configRevision"]
        programmed = st.programmed(revision, f"serves generation {entry.generation}")
    conditions = st.with_kstatus([accepted, resolved, programmed])
    return {
        "observedGeneration": entry.generation,
        "conditions": st.merge_conditions(previous.get("conditions"), conditions, entry.generation, now),
        "backendWeights": weights,
        "gateway": f"{gateway[0]}/{gateway[1]}" if gateway else None,
        "configRevision": revision,
    }


def backend_status(entry: Entry, translation: Translation, routes: int, now: str) -> dict[str, Any]:
    accepted, resolved = translated(translation, entry)
    conditions = st.with_kstatus([accepted, resolved])
    return {
        "observedGeneration": entry.generation,
        "conditions": st.merge_conditions(entry.status.get("conditions"), conditions, entry.generation, now),
        "routes": routes,
    }


def gateway_status(
    entry: Entry,
    translation: Translation,
    outcome: st.Outcome,
    deployment: Mapping[str, Any] | None,
    address: str | None,
    now: str,
) -> dict[str, Any]:
    accepted, resolved = translated(translation, entry)
    gateway = entry.model if isinstance(entry.model, ModelGateway) else None
    programmed = (
        outcome.programmed
        if gateway is not None
        else st.not_programmed(st.REASON_NOT_ATTACHED, "the gateway is not accepted")
    )
    desired = gateway.spec.replicas if gateway is not None else 0
    dep_status = (deployment or {}).get("status") or {}
    ready = int(dep_status.get("readyReplicas") or 0)
    replicas = int(dep_status.get("replicas") or 0)
    rollout_done = (
        deployment is not None
        and (deployment.get("metadata") or {}).get("generation") == dep_status.get("observedGeneration")
        and ready >= desired
    )
    proxies = (
        Condition("ProxiesReady", "True", "Ready", "")
        if rollout_done or desired == 0
        else Condition(
            "ProxiesReady", "False", st.REASON_PROXIES_NOT_READY, f"{ready} of {desired} proxy pods are ready"
        )
    )
    ready_trio = st.summarize([accepted, resolved, programmed, proxies])
    conditions = [accepted, resolved, programmed, *ready_trio]
    routes = sum(1 for gw in translation.attachments.values() if gw == entry.key)
    return {
        "observedGeneration": entry.generation,
        "conditions": st.merge_conditions(entry.status.get("conditions"), conditions, entry.generation, now),
        "replicas": replicas,
        "readyReplicas": ready,
        "address": address,
        "configRevision": outcome.revision,
        "routes": routes,
    }


async def write_status(state: OperatorState, entry: Entry, desired: dict[str, Any]) -> bool:
    """Patch `/status` when a field we own differs from what is there (or what we wrote last)."""
    key = entry.object_key
    if not st.status_changed(latest(state, entry).status, desired):
        return False
    path = path_for("routeway.dev/v1alpha1", PLURALS[entry.kind], entry.namespace, entry.name) + "/status"
    try:
        await state.api.patch(path, {"status": desired})
    except ApiError as exc:
        if exc.status == 404:
            return False  # deleted meanwhile: nothing to report on
        raise exc.to_kopf(f"writing status of {entry.kind} {entry.namespace}/{entry.name}") from None
    state.status_written[key] = desired
    return True


async def write_statuses(state: OperatorState, items: Sequence[tuple[Entry, dict[str, Any]]]) -> int:
    """Write many statuses with bounded concurrency; the first failure is raised after all ran."""
    semaphore = asyncio.Semaphore(state.settings.status_concurrency)
    failures: list[BaseException] = []

    async def one(entry: Entry, desired: dict[str, Any]) -> bool:
        async with semaphore:
            try:
                return await write_status(state, entry, desired)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                failures.append(exc)
                return False

    written = await asyncio.gather(*(one(e, d) for e, d in items))
    if failures:
        raise failures[0]
    return sum(written)


async def post_condition_events(state: OperatorState, entry: Entry, desired: Mapping[str, Any]) -> None:
    """Warnings for conditions that just turned False: invalid route, missing backend, …"""
    previous = entry.status.get("conditions")
    for cond in desired.get("conditions") or []:
        if cond["type"] not in (ACCEPTED, RESOLVED_REFS, st.PROGRAMMED) or cond["status"] != "False":
            continue
        if cond["reason"] in (st.REASON_PENDING, st.REASON_NOT_ATTACHED):
            continue  # transient, or already explained by Accepted
        if st.flipped_to_false(
            previous, Condition(cond["type"], cond["status"], cond["reason"], cond["message"])
        ):
            await state.events.warning(entry.reference(), cond["reason"], cond["message"])


def deployment_of(state: OperatorState, entry: Entry) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = first(state.indexes.deployments, entry.key)
    return found
