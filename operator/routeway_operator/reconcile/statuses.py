"""Writing status documents, only when they change, and the Events their transitions deserve.

What a document holds is decided in `routeway.status` (pure); this module does the I/O: each
write is one merge patch of `/status` carrying observedGeneration together with every
condition, so Ready and observedGeneration move in the same write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from routeway import status as st
from routeway.resources import API_VERSION, KIND_MODELS
from routeway_operator.inventory import Entry, first
from routeway_operator.kube import ApiError, path_for
from routeway_operator.state import OperatorState

log = logging.getLogger("routeway.operator.status")


def latest(state: OperatorState, entry: Entry) -> Entry:
    """The entry with the newest status we know: our own last write beats an index that has
    not yet seen it (kopf may lag behind a burst of watch events), so timestamps do not churn."""
    written = state.status_written.get(entry.object_key)
    return dataclasses.replace(entry, status=written) if written is not None else entry


async def write_status(state: OperatorState, entry: Entry, desired: dict[str, Any]) -> bool:
    """Patch `/status` when a field we own differs from what is there (or what we wrote last)."""
    key = entry.object_key
    if not st.status_changed(latest(state, entry).status, desired):
        return False
    path = path_for(API_VERSION, KIND_MODELS[entry.kind].PLURAL, entry.namespace, entry.name) + "/status"
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
    for cond in st.new_failures(entry.status.get("conditions"), desired.get("conditions") or ()):
        await state.events.warning(entry.reference(), cond["reason"], cond["message"])


def deployment_of(state: OperatorState, entry: Entry) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = first(state.indexes.deployments, entry.key)
    return found
