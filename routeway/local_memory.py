"""What `routeway serve` remembers from one served load to the next, so that an object whose
new version has a problem keeps its last good version (issue 14 item 3; routeway.lastgood).

Besides translation problems, local files have one of their own: a file that cannot be read or
parsed right now (mid-edit, a stray character). Its objects are not deleted — the file still
holds them — so they count as invalid, and keep their last good versions.

Secrets too: a Secret whose new version does not parse (`data` that is not base64) or whose
file cannot be read now is served in the version the last load served, so a broken save of a
key Secret does not take down every backend and client using it. A Secret deleted from the
files, or one whose key was removed, is a revocation and applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from routeway.lastgood import LastGood
from routeway.manifests import LoadResult, Problem
from routeway.resources import Secret
from routeway.translate import ObjectKey

SERVING_LAST_GOOD_SECRET = "the Secret is served in its last good version until it parses again"


@dataclass(frozen=True)
class Memory:
    """What one served load leaves for the next: each object's last good version, and the
    file each object came from (a file that cannot be parsed next time keeps its objects)."""

    good: LastGood = field(default_factory=dict)
    sources: Mapping[ObjectKey, str] = field(default_factory=dict)
    secrets: Mapping[ObjectKey, Secret] = field(default_factory=dict)  # the Secrets served


def unreadable_objects(loaded: LoadResult, memory: Memory) -> dict[ObjectKey, str]:
    """Objects of the last load that are missing now because their file (or a document of it)
    cannot be read or parsed: they still exist, their new version is unusable (a file mid-edit
    or broken), so they count as invalid, not deleted."""
    troubled = {
        p.source.split("#", 1)[0]: p.message
        for p in loaded.problems
        if p.obj == "file" or p.obj.startswith("document ")
    }
    present = {ObjectKey(o.kind, o.namespace, o.name) for o in loaded.objects} | set(loaded.invalid)
    out = {}
    for key, source in memory.sources.items():
        file = source.split("#", 1)[0]
        known = key in memory.good or key in memory.secrets
        if known and key not in present and file in troubled:
            out[key] = f"its file no longer holds it in a usable form ({troubled[file]})"
    return out


def keep_last_good_secrets(loaded: LoadResult, memory: Memory) -> LoadResult:
    """`loaded` with each Secret that counts as invalid (its new version does not parse, or its
    file cannot be read now: see `unreadable_objects`) replaced by the version the last load
    served, with a problem saying so."""
    kept = {k: memory.secrets[k] for k in loaded.invalid if k.kind == "Secret" and k in memory.secrets}
    if not kept:
        return loaded
    notes = tuple(
        Problem(memory.sources.get(k, "<memory>"), f"{k.kind}/{k.name}", "", SERVING_LAST_GOOD_SECRET)
        for k in sorted(kept)
    )
    return replace(
        loaded,
        objects=(*loaded.objects, *kept.values()),
        invalid={k: v for k, v in loaded.invalid.items() if k not in kept},
        problems=(*loaded.problems, *notes),
        sources={**{k: memory.sources.get(k, "<memory>") for k in kept}, **loaded.sources},
    )
