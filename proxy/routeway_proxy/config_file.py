"""Config from files: a rendered ProxyConfig JSON plus credentials, re-applied when they change.

This is what a proxy pod runs: the operator's ConfigMap and Secret are mounted as files, so
the source must cope with how Kubernetes updates them — the files are symlinks into a
`..data` directory that is swapped atomically — as well as with an editor saving in place.

Why polling instead of inotify (watchfiles): a stat of a handful of files every 200 ms costs
microseconds; it follows the `..data` symlink swap without watching parent directories,
works on network and overlay filesystems where inotify events never arrive, and needs no
extra dependency. Change detection is by content, not by mtime alone: a stat that did not
change is trusted only when the file was last modified well before we read it (git's
"racy clean" rule), because two saves within one timestamp tick can leave size and mtime
equal.

Credentials arrive either as a directory with one file per credential store key (the shape
of a mounted Secret, see `credential_store_key`) or as one JSON/YAML file mapping credential
refs (or store keys) to values, or a Secret manifest. No message ever contains a value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.proxyconfig import credential_ref_from_store_key, parse_proxy_config

log = logging.getLogger("routeway.proxy.config")

POLL_INTERVAL = 0.2
"""Seconds between checks: a saved change is live well within a second."""

SETTLE_DELAY = 0.05
"""After a change is seen, wait this long and look again, so a file still being written is
not read half-way (which would log a spurious rejection)."""

_RACY_WINDOW_NS = 2_000_000_000  # coarser than any filesystem's timestamp granularity

Snapshot = dict[str, bytes | None]
"""Path → content digest (None: missing or unreadable). Equal snapshots: nothing changed."""


@dataclass
class FileDigests:
    """Content digests of files, re-reading a file only when its stat says it may have changed."""

    _cache: dict[str, tuple[tuple[int, ...], int, bytes]] = field(default_factory=dict)

    def digest(self, path: str) -> bytes | None:
        try:
            st = os.stat(path)
        except OSError:
            self._cache.pop(path, None)
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key and st.st_mtime_ns < cached[1] - _RACY_WINDOW_NS:
            return cached[2]
        read_at = time.time_ns()
        try:
            with open(path, "rb") as fh:
                digest = hashlib.blake2b(fh.read(), digest_size=16).digest()
        except OSError:
            self._cache.pop(path, None)
            return None
        self._cache[path] = (key, read_at, digest)
        return digest

    def snapshot(self, files: Iterable[str]) -> Snapshot:
        snapshot = {path: self.digest(path) for path in sorted(set(files))}
        for gone in self._cache.keys() - snapshot.keys():  # files no longer watched
            del self._cache[gone]
        return snapshot


def list_files(path: str, *, recursive: bool, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """The regular files a watched path stands for (itself, or a folder's visible files).

    Names starting with `.` are skipped: editors' swap files, and the `..data` machinery of
    a mounted ConfigMap or Secret (whose visible entries are symlinks into it).
    """
    if not os.path.isdir(path):
        return [path]
    found: list[str] = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):  # no loops through symlinked folders
                if recursive:
                    found.extend(list_files(entry.path, recursive=True, suffixes=suffixes))
            elif entry.is_file() and (suffixes is None or entry.name.endswith(suffixes)):
                found.append(entry.path)
        except OSError:
            continue
    return found


async def watch_snapshots(
    take: Callable[[], Snapshot], interval: float = POLL_INTERVAL
) -> AsyncIterator[Snapshot]:
    """Yield the first snapshot at once, then each one that differs from the previous.

    Stat calls run in a thread: a stalled network filesystem must not stall requests.
    """
    last = await asyncio.to_thread(take)
    yield last
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(take)
        if current == last:
            continue
        while True:  # settle: a file still being written keeps changing
            await asyncio.sleep(SETTLE_DELAY)
            again = await asyncio.to_thread(take)
            if again == current:
                break
            current = again
        last = current
        yield current


@dataclass(frozen=True)
class ConfigFileSource:
    """A rendered ProxyConfig file (what `routeway render -o json` prints) plus credentials.

    With several workers only the supervisor watches it and relays each update (`relay.py`).
    """

    config_path: str
    credentials_path: str | None = None
    interval: float = POLL_INTERVAL

    def describe(self) -> str:
        return self.config_path

    async def watch(self) -> AsyncIterator[ConfigUpdate]:
        digests = FileDigests()

        def take() -> Snapshot:
            files = [self.config_path]
            if self.credentials_path is not None:
                files += list_files(self.credentials_path, recursive=False)  # the file, or the folder's files
            return digests.snapshot(files)

        async for _ in watch_snapshots(take, self.interval):
            yield await asyncio.to_thread(self.load)

    def load(self) -> ConfigUpdate:
        """Read both files now; every problem becomes a rejection, never an exception."""
        try:
            with open(self.config_path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            return ConfigRejected(self.config_path, (f"{self.config_path}: cannot read: {exc.strerror}",))
        try:
            config = parse_proxy_config(raw)
        except ValidationError as exc:
            return ConfigRejected(self.config_path, format_validation_error(self.config_path, exc))
        except ValueError as exc:  # JSON syntax, not an object, unsupported schemaVersion
            return ConfigRejected(self.config_path, (f"{self.config_path}: {exc}",))
        if self.credentials_path is None:
            return ConfigLoaded(config, {}, self.config_path)
        try:
            credentials = read_credentials(self.credentials_path)
        except CredentialsError as exc:
            return ConfigRejected(self.credentials_path, (str(exc),))
        return ConfigLoaded(config, credentials, self.config_path)


def format_validation_error(source: str, exc: ValidationError) -> tuple[str, ...]:
    """One line per field, as `routeway validate` prints them."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        lines.append(f"{source}: {loc}: {err['msg']}" if loc else f"{source}: {err['msg']}")
    return tuple(lines)


class CredentialsError(ValueError):
    """Credentials that cannot be used; the message names the file and key, never a value."""


def read_credentials(path: str) -> dict[str, str]:
    """credentialRef → value, from a directory of store-key files or one mapping file."""
    if os.path.isdir(path):
        return _read_credentials_dir(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror}") from None
    return _credentials_from_document(path, _parse_document(path, raw))


def _read_credentials_dir(path: str) -> dict[str, str]:
    credentials: dict[str, str] = {}
    for file in list_files(path, recursive=False):
        name = os.path.basename(file)
        try:
            ref = credential_ref_from_store_key(name)
        except ValueError:
            log.warning("credentials: ignoring %s: not a credential store key (namespace_secret_key)", file)
            continue
        try:
            with open(file, "rb") as fh:
                credentials[ref] = _decode_value(file, fh.read())
        except OSError as exc:
            raise CredentialsError(f"{file}: cannot read: {exc.strerror}") from None
    return credentials


def _decode_value(where: str, raw: bytes) -> str:
    """A credential as text, surrounding whitespace dropped (`echo key > file` adds a line
    break; the operator strips Secret values the same way)."""
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: value is not UTF-8 text") from None


def _parse_document(path: str, raw: bytes) -> Any:
    # Report positions only: parser messages quote the offending line, which may hold a key.
    if path.endswith(".json"):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CredentialsError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}") from None
    try:
        return yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CredentialsError(f"{path}: invalid YAML{where}") from None
    except yaml.YAMLError:
        raise CredentialsError(f"{path}: invalid YAML") from None


def _credentials_from_document(path: str, doc: Any) -> dict[str, str]:
    """A mapping of refs (`ns/secret/key`) or store keys (`ns_secret_key`) to values, or a
    Secret manifest whose keys are store keys (what the operator writes, `kubectl get -o yaml`)."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise CredentialsError(f"{path}: expected a mapping of credential refs to values")
    entries: dict[str, str] = {}
    if doc.get("kind") == "Secret":
        for key, value in _mapping(path, doc.get("data")).items():
            try:
                entries[key] = _decode_value(
                    f"{path}: data.{key}", base64.b64decode(str(value), validate=True)
                )
            except binascii.Error:
                raise CredentialsError(f"{path}: data.{key}: not base64") from None
        for key, value in _mapping(path, doc.get("stringData")).items():
            entries[key] = value
    else:
        entries = _mapping(path, doc)
    credentials: dict[str, str] = {}
    for key, value in entries.items():
        if key.count("/") == 2:
            credentials[key] = value
            continue
        try:
            credentials[credential_ref_from_store_key(key)] = value
        except ValueError:
            raise CredentialsError(
                f"{path}: key {key!r} is neither a credential ref (namespace/secret/key) "
                "nor a store key (namespace_secret_key)"
            ) from None
    return credentials


def _mapping(path: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CredentialsError(f"{path}: expected a mapping")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise CredentialsError(f"{path}: key {key!r}: keys and values must be strings")
        out[key] = item
    return out
