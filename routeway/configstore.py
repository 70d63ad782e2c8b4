"""How a gateway's ProxyConfig and credentials are stored in Kubernetes objects.

One definition of the storage format, used by both sides: the operator encodes (its pure
builders wrap the result into ConfigMaps and a Secret) and the proxy's in-cluster source
decodes. Both used to import it from the proxy's watcher, which tied the operator to the
data plane's I/O code for what is only a data format; here it is pure (no client, no I/O),
so it is tested without an API server and the operator imports nothing from `proxy/`.

- Small configs: the ConfigMap holds the ProxyConfig JSON under `config.json`.
- Configs over the budget (~900 KiB; Kubernetes objects are limited to about 1 MiB): the
  JSON is gzipped and split into shard ConfigMaps (`<configmap>-a0`, `-a1`, … in slot `a`
  or `b`) holding `binaryData.part`; the ConfigMap itself then holds only `manifest.json`
  naming the shards, the revision, the SHA-256 of the compressed bytes and the JSON's size.
  The operator writes the shards of the slot the manifest does not name, then the manifest
  (last), so a reader never sees a half-written set: a shard overwritten under a reader (two
  quick revisions) fails the checksum (`TornConfig`) and the read is retried from the
  manifest.
- Credentials: the Secret's data maps credential store keys (`credential_store_key`) to the
  base64 of each value. They never appear in a ConfigMap or in an error message.

Decoding is sans-I/O: `shards_to_read` says which shard ConfigMaps a manifest needs, the
caller fetches them however it likes, and `decode_config` checks and reassembles them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeway.proxyconfig import credential_ref_from_store_key, credential_store_key

CONFIG_KEY = "config.json"
MANIFEST_KEY = "manifest.json"
SHARD_KEY = "part"
REVISION_ANNOTATION = "routeway.dev/config-revision"
ENCODING = "gzip"
SLOTS = ("a", "b")
MAX_SHARDS = 16
"""A proxy's Role names every object it may read (`config_object_names`), so the count is fixed."""
DEFAULT_BUDGET = 900 * 1024
"""Bytes of one ConfigMap's data before the config is compressed and sharded."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ConfigTooLarge(ValueError):
    """Even compressed, the config needs more shards than a proxy's Role may read."""


class TornConfig(ValueError):
    """Shards changed under the reader (or are missing): read the manifest again."""


class InvalidManifest(ValueError):
    """The manifest is not one an operator writes: retrying will not help."""


# --- names ----------------------------------------------------------------------------------


def shard_name(configmap: str, slot: str, index: int) -> str:
    return f"{configmap}-{slot}{index}"


def config_object_names(configmap: str) -> list[str]:
    """Every ConfigMap name a proxy may need to read: the Role's resourceNames."""
    return [configmap] + [shard_name(configmap, s, i) for s in SLOTS for i in range(MAX_SHARDS)]


# --- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What the ConfigMap says about a sharded config; `sha256` is of the compressed bytes."""

    revision: str
    slot: str
    shards: tuple[str, ...]
    sha256: str
    size: int  # bytes of the ProxyConfig JSON once decompressed
    encoding: str = ENCODING

    def to_json(self) -> str:
        """The `manifest.json` text: sorted keys, so an unchanged config rewrites nothing."""
        doc = {
            "revision": self.revision,
            "encoding": self.encoding,
            "slot": self.slot,
            "shards": list(self.shards),
            "sha256": self.sha256,
            "size": self.size,
        }
        return json.dumps(doc, sort_keys=True)


def parse_manifest(text: str) -> Manifest:
    """Check a `manifest.json` field by field; InvalidManifest names what is wrong."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        raise InvalidManifest(f"{MANIFEST_KEY} is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidManifest(f"{MANIFEST_KEY} is not a JSON object")
    encoding = doc.get("encoding")
    if encoding != ENCODING:
        raise InvalidManifest(f"unsupported config encoding {encoding!r}")
    revision, slot, shards = doc.get("revision"), doc.get("slot"), doc.get("shards")
    sha256, size = doc.get("sha256"), doc.get("size")
    if not isinstance(revision, str):
        raise InvalidManifest(f"{MANIFEST_KEY}: revision is not a string")
    if slot not in SLOTS:
        raise InvalidManifest(f"{MANIFEST_KEY}: slot {slot!r} is not one of {list(SLOTS)}")
    if (
        not isinstance(shards, list)
        or not 1 <= len(shards) <= MAX_SHARDS
        or not all(isinstance(s, str) for s in shards)
    ):
        raise InvalidManifest(f"{MANIFEST_KEY}: shards is not a list of 1 to {MAX_SHARDS} names")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidManifest(f"{MANIFEST_KEY}: sha256 is not a SHA-256 hex digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifest(f"{MANIFEST_KEY}: size is not a byte count")
    return Manifest(revision, slot, tuple(shards), sha256, size, encoding)


def _lenient_manifest(data: Mapping[str, str] | None) -> Manifest | None:
    if not data or MANIFEST_KEY not in data:
        return None
    try:
        return parse_manifest(data[MANIFEST_KEY])
    except InvalidManifest:
        return None


def manifest_slot(data: Mapping[str, str] | None) -> str | None:
    """The shard slot a ConfigMap's manifest names (None: inline, absent or unreadable).

    The operator writes the other slot, so a reader of the live set is never disturbed."""
    manifest = _lenient_manifest(data)
    return manifest.slot if manifest is not None else None


def manifest_shards(data: Mapping[str, str] | None) -> frozenset[str]:
    """The shard names a ConfigMap's manifest uses (empty: inline, absent or unreadable):
    the operator keeps them while removing stale shards, for readers still on that set."""
    manifest = _lenient_manifest(data)
    return frozenset(manifest.shards) if manifest is not None else frozenset()


# --- encoding (the operator) ----------------------------------------------------------------


@dataclass(frozen=True)
class EncodedConfig:
    data: dict[str, str]  # the ConfigMap's data: config.json, or manifest.json
    shards: tuple[tuple[str, dict[str, str]], ...] = ()  # (name, binaryData) written first
    slot: str | None = None


def encode_config(
    config_json: bytes, revision: str, configmap: str, *, slot: str = "a", budget: int = DEFAULT_BUDGET
) -> EncodedConfig:
    """Inline when it fits the budget; else gzip, base64 and split into shards of `slot`."""
    if len(config_json) <= budget:
        return EncodedConfig({CONFIG_KEY: config_json.decode("utf-8")})
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r} is not one of {list(SLOTS)}")
    compressed = gzip.compress(config_json, compresslevel=6, mtime=0)
    chunk = max(1, budget * 3 // 4)  # base64 grows by 4/3: each shard's data stays within budget
    parts = [compressed[i : i + chunk] for i in range(0, len(compressed), chunk)]
    if len(parts) > MAX_SHARDS:
        raise ConfigTooLarge(
            f"config of {len(config_json)} bytes needs {len(parts)} shards after compression "
            f"(at most {MAX_SHARDS})"
        )
    names = tuple(shard_name(configmap, slot, i) for i in range(len(parts)))
    manifest = Manifest(revision, slot, names, hashlib.sha256(compressed).hexdigest(), len(config_json))
    shards = tuple(
        (name, {SHARD_KEY: base64.b64encode(part).decode("ascii")})
        for name, part in zip(names, parts, strict=True)
    )
    return EncodedConfig({MANIFEST_KEY: manifest.to_json()}, shards, slot)


def encode_credentials(credentials: Mapping[str, str]) -> dict[str, str]:
    """The credentials Secret's data: credential store key → base64 of the value, sorted."""
    return {
        credential_store_key(ref): base64.b64encode(value.encode("utf-8")).decode("ascii")
        for ref, value in sorted(credentials.items())
    }


# --- decoding (the proxy) -------------------------------------------------------------------


def shards_to_read(data: Mapping[str, str]) -> tuple[str, ...]:
    """The shard ConfigMaps a ConfigMap's data needs (none when inline), in order.

    Raises ValueError (InvalidManifest) when the data holds no config at all or a manifest an
    operator does not write."""
    if CONFIG_KEY in data:
        return ()
    if MANIFEST_KEY not in data:
        raise ValueError(f"the ConfigMap has neither {CONFIG_KEY} nor {MANIFEST_KEY}")
    return parse_manifest(data[MANIFEST_KEY]).shards


def decode_config(data: Mapping[str, str], shards: Mapping[str, Mapping[str, str] | None]) -> bytes:
    """The ProxyConfig JSON bytes a ConfigMap's data stands for.

    `shards` maps each name `shards_to_read` gave to that shard ConfigMap's `binaryData` (None
    or absent: not found). TornConfig when the shards do not add up to what the manifest
    says (read it again); InvalidManifest or ValueError when the data is unusable as it is.
    """
    if CONFIG_KEY in data:
        return data[CONFIG_KEY].encode("utf-8")
    if MANIFEST_KEY not in data:
        raise ValueError(f"the ConfigMap has neither {CONFIG_KEY} nor {MANIFEST_KEY}")
    manifest = parse_manifest(data[MANIFEST_KEY])
    parts = []
    for name in manifest.shards:
        binary = shards.get(name) or {}
        if SHARD_KEY not in binary:
            raise TornConfig(f"shard {name} is missing")
        try:
            parts.append(base64.b64decode(binary[SHARD_KEY], validate=True))
        except binascii.Error:
            raise TornConfig(f"shard {name} is not base64") from None
    compressed = b"".join(parts)
    if hashlib.sha256(compressed).hexdigest() != manifest.sha256:
        raise TornConfig("shards do not match the manifest checksum")
    try:
        config_json = gzip.decompress(compressed)
    except (OSError, EOFError) as exc:  # the checksum matched: the manifest names a bad stream
        raise InvalidManifest(f"the shards named by {MANIFEST_KEY} are not gzip: {exc}") from None
    if len(config_json) != manifest.size:
        raise InvalidManifest(
            f"{MANIFEST_KEY} says {manifest.size} bytes, the shards hold {len(config_json)}"
        )
    return config_json


def decode_credentials(data: Mapping[str, str] | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The credentials Secret's data as (credentialRef → value, store keys skipped as invalid).

    Skipped keys are returned, not raised: one bad entry must not take the others away. The
    caller reports them by key; values never appear in a message."""
    out: dict[str, str] = {}
    skipped: list[str] = []
    for key, raw in (data or {}).items():
        try:
            ref = credential_ref_from_store_key(key)
            out[ref] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            skipped.append(key)
    return out, tuple(skipped)
