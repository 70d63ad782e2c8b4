"""Reconcile one ModelBackend's status: valid spec, Secret present, number of routes using it,
and its last good version (reconcile/lastgood.py), which the gateways' reconciles serve while
a newer version has a problem.

A backend's verdict does not depend on any gateway, so it is its own reconcile key: a
Secret appearing updates the backend once, not once per gateway that uses it.
"""

from __future__ import annotations

from routeway import status as st
from routeway.lastgood import translate_keeping_last_good
from routeway.translate import NsName
from routeway_operator.inventory import snapshot_backend, values
from routeway_operator.reconcile import statuses
from routeway_operator.reconcile.lastgood import last_good_fields, last_good_of
from routeway_operator.state import OperatorState


async def reconcile_backend(state: OperatorState, key: NsName) -> None:
    entry, inventory = snapshot_backend(key, backends=state.indexes.backends, secrets=state.indexes.secrets)
    if entry is None:
        return  # deleted: nothing to report on
    entry = statuses.latest(state, entry)
    translation = translate_keeping_last_good(inventory, last_good_of([entry]))
    routes = len(set(values(state.indexes.routes_by_backend, key)))
    conditions = translation.conditions.get(entry.object_key, ())
    desired = st.backend_status(entry, conditions, routes, st.now_rfc3339())
    desired |= last_good_fields(entry, translation)
    await statuses.post_condition_events(state, entry, desired)
    await statuses.write_statuses(state, [(entry, desired)])
