"""Each object's last good version, kept in its own status (issue 14 item 3, routeway.lastgood).

Where it lives, and why there: `status.lastGood` ({generation, spec}) of the object itself. The
operator keeps no state of its own, so what must survive a restart is written to the API; the
object's status is the one place that is the operator's to write, is read back by the same
watch that feeds the indexes (no extra object, list or RBAC), is deleted with the object (a
deleted object is gone), and shows users exactly what is being served instead of their edit
(`status.servingGeneration` next to `observedGeneration`). Deriving it from the rendered
ConfigMap would not do: that holds the translated route, not the object, and nothing of a
backend or a client a gateway no longer uses.

Writers: a gateway's reconcile writes it for the gateway, its routes and its clients; a
backend's own reconcile for the backend (its verdict depends on no gateway). A gateway's
reconcile reads every object's from the index, our own last write first
(`statuses.latest`), so a just-written version is used before the watch echoes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from routeway.lastgood import LastGood, Versioned
from routeway.resources import API_VERSION, KIND_MODELS, ModelClient, ModelRoute
from routeway.translate import ObjectKey, Translation
from routeway_operator.inventory import Entry

_PARSED: dict[tuple[object, ...], Versioned] = {}
"""Parsed last good versions by object identity and generation (a generation's spec never
changes), so a gateway of 10,000 routes does not re-validate 10,000 specs per reconcile."""
_PARSED_MAX = 100_000


def last_good_of(entries: Iterable[Entry]) -> dict[ObjectKey, Versioned]:
    """The last good version each entry's status holds, as a model (metadata from the entry,
    generation from the version). A malformed document is ignored: a user who can edit status
    must not make the operator fail, only lose the fallback."""
    out: dict[ObjectKey, Versioned] = {}
    for entry in entries:
        document = entry.status.get("lastGood")
        if not isinstance(document, Mapping) or not isinstance(document.get("spec"), Mapping):
            continue
        generation = document.get("generation")
        created = entry.model.metadata.creation_timestamp if entry.model is not None else None
        identity = (entry.object_key, entry.uid, generation, created) if isinstance(generation, int) else None
        if identity is not None and identity in _PARSED:
            out[entry.object_key] = _PARSED[identity]
            continue
        metadata: dict[str, Any] = {
            "name": entry.name,
            "namespace": entry.namespace,
            "uid": entry.uid or None,
            "generation": generation if isinstance(generation, int) else None,
        }
        if created:
            metadata["creationTimestamp"] = created  # the order of model-name conflicts
        body = {"apiVersion": API_VERSION, "kind": entry.kind, "metadata": metadata, "spec": document["spec"]}
        try:
            model = KIND_MODELS[entry.kind].model_validate(body)
        except (ValidationError, KeyError):
            continue
        assert isinstance(model, Versioned)
        out[entry.object_key] = model
        if identity is not None:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[identity] = model
    return out


def last_good_fields(entry: Entry, translation: Translation) -> dict[str, Any]:
    """`servingGeneration` and `lastGood` of `entry`'s status after `translation` (None: the
    field is removed). A generation is reported only when that version really serves: a route
    rendered with at least one target, an attached client, a backend or gateway whose served
    version has no findings (an unchanged object whose Secret was deleted is not in the config,
    although its generation is the last good one)."""
    key = entry.object_key
    good = translation.good.get(key)
    if key.kind in (ModelRoute.KIND, ModelClient.KIND) and key not in translation.attachments:
        serving = None  # not attached: no version of it serves
    elif key.kind == ModelRoute.KIND and key not in translation.routes_with_targets:
        serving = None  # rendered, but with nothing to send a request to
    elif key.kind != ModelRoute.KIND and key in translation.troubled:
        serving = None
    elif key in translation.serving_older:
        serving = translation.serving_older[key]
    elif good is not None and good.metadata.generation == entry.generation:
        serving = entry.generation
    else:
        serving = None
    document = (
        {
            "generation": good.metadata.generation,
            "spec": good.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        if good is not None
        else None
    )
    return {"servingGeneration": serving, "lastGood": document}


def cache_key(last_good: LastGood) -> frozenset[tuple[ObjectKey, int | None]]:
    """What of the last good set a cached translation depends on."""
    return frozenset((k, v.metadata.generation) for k, v in last_good.items())
