"""ModelClients in a gateway's reconcile: their status documents and their usage.

A client has no reconcile of its own: it is part of its gateway's config (`gateway.clients`,
by reference), so the gateway's reconcile decides its conditions (routeway.client_status) in
the same pass that writes the routes' statuses.

Usage (`status.usage`) comes from the proxies, not from Prometheus: the gateway's ready pods
are read on their admin port (`GET /usage`, through the same `ProxyReader` seam as the rollout
observations) at most every `usage_interval` seconds (30 by default) per gateway, summed over
pods (routeway.client_usage), and written only when the numbers changed — a status write per
client and read would be a steady load on the API server for nothing. So the numbers lag by up
to the interval, and a gateway with attached clients is reconciled again by itself once per
interval (nothing is rendered or applied again: the snapshot's fingerprint is unchanged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from routeway.client_status import client_status
from routeway.client_usage import ClientUsage, rfc3339, settle_usage, sum_usage, usage_document
from routeway.proxyconfig import ProxyConfig
from routeway.resources import ModelClient, ModelGateway
from routeway.status import Outcome
from routeway.translate import NsName, ObjectKey, Translation
from routeway_operator.inventory import Entry
from routeway_operator.proxies import read_usage, ready_pods
from routeway_operator.reconcile import statuses
from routeway_operator.state import GATEWAY, OperatorState

log = logging.getLogger("routeway.operator.clients")


def attached_clients(translation: Translation, gateway: NsName) -> list[str]:
    """Ids (`ns/name`) of the clients the gateway accepted."""
    return sorted(
        f"{key.namespace}/{key.name}"
        for key, gw in translation.attachments.items()
        if gw == gateway and key.kind == ModelClient.KIND
    )


async def refresh_usage(
    state: OperatorState, key: NsName, gateway: ModelGateway | None, clients: Sequence[str]
) -> None:
    """Read the gateway's proxies' usage when the last read is `usage_interval` old (or there
    was none), and schedule the next read. Nothing to read for a gateway without clients."""
    if gateway is None or not clients:
        state.usage.pop(key, None)
        state.usage_read.pop(key, None)
        return
    now = state.clock()
    last = state.usage_read.get(key)
    interval = state.settings.usage_interval
    if last is None or now - last >= interval:
        state.usage_read[key] = now
        try:
            reports = await read_usage(state.proxy_reader, await ready_pods(state.api, gateway))
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            log.info("gateway %s/%s: proxies' usage not read: %s", *key, exc)
            reports = None
        if reports:  # no pod answered: keep what was last seen
            state.usage[key] = (rfc3339(now), sum_usage(reports, now))
        last = now
    state.reconciler.wake(ObjectKey(GATEWAY, *key), max(last + interval - now, 0.0))


def client_items(
    state: OperatorState,
    gateway: NsName | None,
    clients: Sequence[Entry],
    translation: Translation,
    config: ProxyConfig | None,
    outcome: Outcome,
    now: str,
) -> list[tuple[Entry, dict[str, Any]]]:
    """The status document of each client of the gateway snapshot."""
    listed = {c.id for c in config.gateway.clients} if config is not None else set()
    seen = state.usage.get(gateway) if gateway is not None else None
    items = []
    for entry in (statuses.latest(state, e) for e in clients):
        attached = translation.attachments.get(entry.object_key)
        client_id = f"{entry.namespace}/{entry.name}"
        usage: Mapping[str, Any] | None = None
        if seen is not None and attached is not None:
            observed_at, by_client = seen
            fresh = usage_document(by_client.get(client_id, ClientUsage()), observed_at)
            usage = settle_usage(entry.status.get("usage"), fresh)
        desired = client_status(
            entry,
            entry.model if isinstance(entry.model, ModelClient) else None,
            translation.conditions.get(entry.object_key, ()),
            attached,
            client_id in listed,
            outcome,
            now,
            usage,
        )
        items.append((entry, desired))
    return items
