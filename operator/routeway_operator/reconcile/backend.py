"""Reconcile one ModelBackend's status: valid spec, Secret present, number of routes using it.

A backend's verdict does not depend on any gateway, so it is its own reconcile key: a
Secret appearing updates the backend once, not once per gateway that uses it.
"""

from __future__ import annotations

from routeway import status as st
from routeway.translate import NsName, translate
from routeway_operator.inventory import snapshot_backend, values
from routeway_operator.reconcile import statuses
from routeway_operator.state import OperatorState


async def reconcile_backend(state: OperatorState, key: NsName) -> None:
    entry, inventory = snapshot_backend(key, backends=state.indexes.backends, secrets=state.indexes.secrets)
    if entry is None:
        return  # deleted: nothing to report on
    entry = statuses.latest(state, entry)
    translation = translate(inventory)
    routes = len(set(values(state.indexes.routes_by_backend, key)))
    conditions = translation.conditions.get(entry.object_key, ())
    desired = st.backend_status(entry, conditions, routes, st.now_rfc3339())
    await statuses.post_condition_events(state, entry, desired)
    await statuses.write_statuses(state, [(entry, desired)])
