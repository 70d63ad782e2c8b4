"""What `routeway serve` remembers from one served load to the next, so that an object whose
new version has a problem keeps its last good version (issue 14 item 3; routeway.lastgood).

Besides translation problems, local files have one of their own: a file that cannot be read or
parsed right now (mid-edit, a stray character). Its objects are not deleted — the file still
holds them — so they count as invalid, and keep their last good versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from routeway.lastgood import LastGood
from routeway.manifests import LoadResult
from routeway.translate import ObjectKey


@dataclass(frozen=True)
class Memory:
    """What one served load leaves for the next: each object's last good version, and the
    file each object came from (a file that cannot be parsed next time keeps its objects)."""

    good: LastGood = field(default_factory=dict)
    sources: Mapping[ObjectKey, str] = field(default_factory=dict)


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
        if key in memory.good and key not in present and file in troubled:
            out[key] = f"its file no longer holds it in a usable form ({troubled[file]})"
    return out
