"""What `routeway serve` remembers from one served load to the next, so that an object whose
new version has a problem keeps its last good version (issue 14 item 3; routeway.lastgood).

Besides translation problems, local files have one of their own: a file that cannot be read or
parsed right now (mid-edit, a stray character). Its objects are not deleted — the file still
holds them — so they count as invalid, and keep their last good versions.

Secrets are objects too. A save that breaks an upstream-key Secret (`data:` that is not
base64, a value that is not a string, the key a backend uses removed) would otherwise make
every backend using it SecretNotFound and its routes answer 503, although the Secret had a
good previous version. Such a Secret keeps its last good version, reported like any other
object; a new version that parses and has every key the gateway sends (`wanted_keys`) is good,
so a rotation (new values) takes effect at once, and removing a client key revokes it. A
deleted Secret is gone, as a deleted object is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from routeway.lastgood import SERVING_LAST_GOOD, LastGood
from routeway.manifests import LoadResult, Problem
from routeway.resources import ModelBackend, ModelGateway, Secret
from routeway.secretsources import keys_text
from routeway.translate import ObjectKey


@dataclass(frozen=True)
class Memory:
    """What one served load leaves for the next: each object's last good version, and the
    file each object came from (a file that cannot be parsed next time keeps its objects)."""

    good: LastGood = field(default_factory=dict)
    sources: Mapping[ObjectKey, str] = field(default_factory=dict)
    secrets: Mapping[ObjectKey, Secret] = field(default_factory=dict, repr=False)  # last good Secrets


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
        kept = key in memory.good or key in memory.secrets
        if kept and key not in present and file in troubled:
            out[key] = f"its file no longer holds it in a usable form ({troubled[file]})"
    return out


def secret_key(secret: Secret) -> ObjectKey:
    return ObjectKey("Secret", secret.namespace, secret.name)


def wanted_keys(objects: Iterable[object]) -> dict[ObjectKey, dict[str, str]]:
    """Per Secret, the keys the gateway sends that the objects ask of it, and who asks
    (`ModelBackend default/gpt`): upstream keys and the limits' Redis password. Keys the
    gateway accepts (a ModelClient's, the gateway's client keys) are left out: removing one
    from its Secret revokes it, and a revoked key must not keep working as a last good value."""
    wanted: dict[ObjectKey, dict[str, str]] = {}

    def want(namespace: str, name: str, key: str, by: object) -> None:
        who = f"{getattr(by, 'KIND', '')} {getattr(by, 'namespace', '')}/{getattr(by, 'name', '')}"
        wanted.setdefault(ObjectKey("Secret", namespace, name), {}).setdefault(key, who)

    for obj in objects:
        if isinstance(obj, ModelBackend) and obj.spec.api_key_secret_ref is not None:
            ref = obj.spec.api_key_secret_ref
            want(obj.namespace, ref.name, ref.key, obj)
        elif isinstance(obj, ModelGateway) and obj.spec.limits is not None and obj.spec.limits.redis:
            password = obj.spec.limits.redis.password_secret_ref
            if password is not None:
                want(obj.namespace, password.name, password.key, obj)
    return wanted


def keep_last_good_secrets(
    loaded: LoadResult, objects: Iterable[object], memory: Memory
) -> tuple[LoadResult, list[Problem]]:
    """`loaded` with each Secret whose new version is broken replaced by its last good one,
    and a problem per Secret so kept. Broken: it does not parse (`loaded.invalid`, its file
    included), or it lacks a key that `objects` (what the files ask to serve) need and its
    last good version has. Only names and key names are reported, never a value."""
    wanted = wanted_keys(objects)
    current = {secret_key(o): o for o in loaded.objects if isinstance(o, Secret)}
    kept: dict[ObjectKey, Secret] = {}
    problems: list[Problem] = []
    for key, older in memory.secrets.items():
        newer = current.get(key)
        if newer is None and key in loaded.invalid:
            why = "its new version does not parse"
        elif newer is not None:
            have = set(newer.data) | set(newer.string_data)
            had = set(older.data) | set(older.string_data)
            lost = {k: who for k, who in wanted.get(key, {}).items() if k not in have and k in had}
            if not lost:
                continue
            why = f"its new version lacks {keys_text(lost)}, needed by " + ", ".join(
                sorted(set(lost.values()))
            )
        else:
            continue  # deleted: gone, like any deleted object
        kept[key] = older
        source = loaded.sources.get(key) or memory.sources.get(key, "<files>")
        problems.append(Problem(source, f"Secret/{key.name}", "", f"{SERVING_LAST_GOOD}: {why}"))
    if not kept:
        return loaded, problems
    objects_now = (*(o for o in loaded.objects if not (isinstance(o, Secret) and secret_key(o) in kept)),)
    return (
        replace(
            loaded,
            objects=(*objects_now, *kept.values()),
            invalid={k: v for k, v in loaded.invalid.items() if k not in kept},
            sources={**{k: memory.sources[k] for k in kept if k in memory.sources}, **loaded.sources},
        ),
        problems,
    )
