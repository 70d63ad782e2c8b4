"""Translation that keeps serving each object's last good version (issue 14 item 3).

A typo in one edit (a route's backends renamed to names that do not exist, a model name
another route owns, a backend pointed at a Secret key that is not there) used to take that
object down until the next good save, although its previous version was valid. Here an object
whose new version has a translation problem is translated in its *last good* version instead;
the new version's problems are still reported, and the object is marked as serving the older
version (`Translation.serving_older`). Pure, like `routeway.translate`: a function from
(objects, last-good objects) to (IR, findings, which objects serve an older version, the new
last-good set).

What counts:
- a version is *good* when translation finds nothing on it (every condition True);
- a problem is any finding on the object itself: dangling references, conflicts, values that
  pass the schema but not translation, missing Secret keys, and a version that does not parse
  (`Inventory.invalid`: the object still exists, its new version is unusable);
- the last good version is used only when it differs from the new one (an unchanged object
  whose problem comes from elsewhere — its backend was deleted — has nothing better to fall
  back to, and reports the problem as before);
- an object with no last good version (its first version is broken) is left out, as before;
  a deleted object is gone (deletion is not an error) and drops out of the last-good set.

Order: an object's verdict depends on the objects it names (a route on its backends and
gateway, a client on its gateway), so the kinds are settled in that order: backends and
gateways first, then routes and clients are judged against what will really serve. A route
that names a backend whose new version is bad is therefore not itself bad: it resolves to the
backend's last good version. Each object is replaced at most once, so the loop ends.

Rollouts (routeway.rollout) see the rendered config, which holds the last good version: a bad
version never becomes a route revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TypeAlias

from routeway import status as st
from routeway.resources import ModelBackend, ModelClient, ModelGateway, ModelRoute
from routeway.translate import Inventory, ObjectKey, Translation, gateway_of, translate

Versioned: TypeAlias = ModelBackend | ModelRoute | ModelGateway | ModelClient
LastGood: TypeAlias = Mapping[ObjectKey, Versioned]

# Kinds in the order their verdicts depend on each other.
LEVELS: tuple[frozenset[str], ...] = (
    frozenset({ModelBackend.KIND, ModelGateway.KIND}),
    frozenset({ModelRoute.KIND, ModelClient.KIND}),
)

SERVING_LAST_GOOD = "serving the last good version"


def key_of(obj: Versioned) -> ObjectKey:
    return ObjectKey(obj.KIND, obj.namespace, obj.name)


def translate_keeping_last_good(inv: Inventory, last_good: LastGood | None = None) -> Translation:
    """`translate(inv)`, with every object whose new version has a problem replaced by its
    version in `last_good` (when there is one and it differs). The result's `good` is the
    last-good set to pass next time; `serving_older` names the objects replaced (with the
    generation served, None where objects carry none, as in local files)."""
    last_good = last_good or {}
    current = replace(inv, holders=holders(last_good)) if last_good else inv
    replaced: dict[ObjectKey, tuple[st.Finding, ...]] = {}  # → the new version's findings
    translation = translate(current)
    while last_good:
        bad = [
            key
            for key, found in translation.findings.items()
            if found and key not in replaced and _better(inv, key, last_good)
        ]
        level = next((lv for lv in LEVELS if any(k.kind in lv for k in bad)), None)
        if level is None:
            break
        chosen = [k for k in bad if k.kind in level]
        for key in chosen:
            replaced[key] = translation.findings[key]
        current = _with_versions(current, (last_good[k] for k in chosen))
        translation = translate(current)
    if not replaced:
        return replace(translation, good=_good(inv, translation, {}, last_good))
    findings = dict(translation.findings)
    for key, found in replaced.items():
        older = last_good[key]
        note = st.Finding(
            found[0].condition,
            found[0].reason,
            found[0].field,
            f"{SERVING_LAST_GOOD}{_generation_text(older)}",
        )
        findings[key] = (*found, note, *(f for f in findings.get(key, ()) if f not in found))
    conditions = {k: st.conditions_from_findings(f) for k, f in findings.items()}
    serving = {k: last_good[k].metadata.generation for k in sorted(replaced)}
    return replace(
        translation,  # its `troubled`: the served (older) versions' own findings, not the notes
        findings=findings,
        conditions=conditions,
        serving_older=serving,
        good=_good(inv, translation, replaced, last_good),
    )


def holders(last_good: LastGood) -> dict[tuple[tuple[str, str], str], tuple[str, str]]:
    """(gateway, public model) → the route serving it: the one whose last good version claims
    it. A route whose new version is bad serves its last good version, and one whose new
    version is good has that as its last good version after this translation, so the last good
    set says who serves what — and, being persisted (serve: in memory across reloads; the
    operator: `status.lastGood`), survives an operator restart. Two last good versions can claim
    one name only if the set was written by hand; then the age rule decides between them."""
    out: dict[tuple[tuple[str, str], str], tuple[str, str]] = {}
    shared: set[tuple[tuple[str, str], str]] = set()
    for key, obj in last_good.items():
        if isinstance(obj, ModelRoute):
            claim = (gateway_of(obj), obj.spec.model)
            if claim in out:
                shared.add(claim)
            out[claim] = (key.namespace, key.name)
    for claim in shared:
        del out[claim]
    return out


def _generation_text(obj: Versioned) -> str:
    generation = obj.metadata.generation
    return f" (generation {generation})" if generation is not None else ""


def _present(inv: Inventory, key: ObjectKey) -> Versioned | None:
    tables: dict[str, Mapping[tuple[str, str], Versioned]] = {
        ModelBackend.KIND: inv.backends,
        ModelRoute.KIND: inv.routes,
        ModelGateway.KIND: inv.gateways,
        ModelClient.KIND: inv.clients,
    }
    table = tables.get(key.kind)
    return None if table is None else table.get((key.namespace, key.name))


def _better(inv: Inventory, key: ObjectKey, last_good: LastGood) -> bool:
    """Whether `key` has a last good version that is not the one it has now."""
    older = last_good.get(key)
    if older is None:
        return False
    now = _present(inv, key)
    if now is None:
        return key in inv.invalid  # its new version does not parse; a deleted one is gone
    return now.spec != older.spec


def _with_versions(inv: Inventory, versions: Iterable[Versioned]) -> Inventory:
    backends = dict(inv.backends)
    routes = dict(inv.routes)
    gateways = dict(inv.gateways)
    clients = dict(inv.clients)
    invalid = dict(inv.invalid)
    for obj in versions:
        key = (obj.namespace, obj.name)
        invalid.pop(key_of(obj), None)
        if isinstance(obj, ModelBackend):
            backends[key] = obj
        elif isinstance(obj, ModelRoute):
            routes[key] = obj
        elif isinstance(obj, ModelGateway):
            gateways[key] = obj
        else:
            clients[key] = obj
    return replace(inv, backends=backends, routes=routes, gateways=gateways, clients=clients, invalid=invalid)


def _good(
    inv: Inventory,
    translation: Translation,
    replaced: Mapping[ObjectKey, object],
    last_good: LastGood,
) -> dict[ObjectKey, Versioned]:
    """Each existing object's last good version after this translation: its current one when
    translation found nothing on it, else the one it had (replaced or not). Deleted objects
    are left out."""
    good: dict[ObjectKey, Versioned] = {}
    for key in translation.findings:
        now = _present(inv, key)
        if key not in replaced and now is not None and not translation.findings[key]:
            good[key] = now
        elif key in last_good:  # findings name only existing objects: a deleted one is gone
            good[key] = last_good[key]
    return good
