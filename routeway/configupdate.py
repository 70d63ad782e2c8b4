"""Config updates: what a config source yields, and the message a supervisor sends its workers.

A proxy process learns about configs through updates: `ConfigLoaded` (a config to serve, with
the credential values its backends reference) or `ConfigRejected` (a new config that cannot
be served; the last good one keeps serving). With several workers only the supervisor reads
the source; each worker receives the updates over a private pipe as one message each.

Why a JSON document and not a pickle: the message is a contract between two processes, so it
is written down here, versioned, checked when read, and readable in a test or a debugger; a
pickle is whatever the classes happen to be on both sides, and unpickling runs code named by
the payload. It is also not slower: decoding the canonical JSON of a 10,000-route config and
validating it into a `ProxyConfig` costs about what unpickling the model did (bench/RESULTS.md).

The message (`encode_update`), UTF-8 JSON with sorted keys, so equal updates are equal bytes:

    {"kind": "ConfigLoaded", "version": 1, "source": "...", "warnings": ["..."],
     "credentials": {"ns/secret/key": "value"}, "config": {ProxyConfig document}}
    {"kind": "ConfigRejected", "version": 1, "source": "...", "errors": ["..."]}

`config` is exactly the document the operator stores (`ProxyConfig.to_document`) and is read
by the same `parse_proxy_config` as a ConfigMap or a file. `credentials` travel only over the
pipe between a supervisor and its own workers (never a file); they are left out of `repr`, and
no error raised here quotes a value. `source`, `warnings` and `errors` are for people: a
string that UTF-8 cannot carry (a file name with undecodable bytes) is sent with those
characters escaped rather than failing the whole update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson
from pydantic import ValidationError

from routeway.gcpause import gc_paused
from routeway.proxyconfig import ProxyConfig, parse_proxy_config

UPDATE_VERSION = 1
"""Bumped on any change a worker of the previous version would misread (a supervisor and its
workers run the same installation, so a mismatch is a bug, reported as such)."""

LOADED = "ConfigLoaded"
REJECTED = "ConfigRejected"


@dataclass(frozen=True)
class ConfigLoaded:
    """A config to serve, with the credential values its backends reference."""

    config: ProxyConfig
    credentials: Mapping[str, str] = field(repr=False)  # credentialRef "ns/secret/key" -> value
    source: str  # where it came from, for logs
    warnings: tuple[str, ...] = ()  # problems with some objects that did not stop the rest


@dataclass(frozen=True)
class ConfigRejected:
    """A new config that cannot be served; the last good one keeps serving."""

    source: str
    errors: tuple[str, ...]


ConfigUpdate: TypeAlias = ConfigLoaded | ConfigRejected


class UnencodableUpdate(ValueError):
    """An update that JSON cannot carry (a credential value that is not valid Unicode)."""


class UndecodableUpdate(ValueError):
    """A message that is not an update of this version; the message quotes no value."""


# --- encoding (the supervisor) --------------------------------------------------------------


def _displayable(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (undecodable file-name bytes) become escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def update_document(update: ConfigUpdate) -> dict[str, Any]:
    """The message as plain JSON-ready data (see the module docstring for its shape)."""
    if isinstance(update, ConfigRejected):
        return {
            "kind": REJECTED,
            "version": UPDATE_VERSION,
            "source": _displayable(update.source),
            "errors": [_displayable(e) for e in update.errors],
        }
    return {
        "kind": LOADED,
        "version": UPDATE_VERSION,
        "source": _displayable(update.source),
        "warnings": [_displayable(w) for w in update.warnings],
        "credentials": dict(update.credentials),
        "config": update.config.to_document(),
    }


def encode_update(update: ConfigUpdate) -> bytes:
    """The canonical message bytes; UnencodableUpdate names the credential JSON cannot carry."""
    try:
        return orjson.dumps(update_document(update), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        if isinstance(update, ConfigLoaded):
            for ref, value in sorted(update.credentials.items()):
                try:
                    ref.encode("utf-8")
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise UnencodableUpdate(
                        f"credential {_displayable(ref)} is not valid Unicode text"
                    ) from None
        raise  # pragma: no cover - every other field is already valid JSON


# --- decoding (a worker) --------------------------------------------------------------------


def _strings(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UndecodableUpdate(f"update field {key!r} is not a list of strings")
    return tuple(value)


def _string(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise UndecodableUpdate(f"update field {key!r} is not a string")
    return value


def decode_update(payload: bytes) -> ConfigUpdate:
    """Read a message `encode_update` wrote; UndecodableUpdate says which field is wrong."""
    with gc_paused():  # a 10,000-route config is ~40,000 objects that all stay alive
        try:
            doc: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UndecodableUpdate(f"update is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise UndecodableUpdate("update is not a JSON object")
        if doc.get("version") != UPDATE_VERSION:
            raise UndecodableUpdate(
                f"update version {doc.get('version')!r} is not {UPDATE_VERSION} (mixed installations?)"
            )
        kind = doc.get("kind")
        if kind == REJECTED:
            return ConfigRejected(_string(doc, "source"), _strings(doc, "errors"))
        if kind != LOADED:
            raise UndecodableUpdate(f"update kind {kind!r} is neither {LOADED} nor {REJECTED}")
        credentials = doc.get("credentials")
        if not isinstance(credentials, dict) or not all(isinstance(v, str) for v in credentials.values()):
            raise UndecodableUpdate("update field 'credentials' is not an object of strings")
        config_doc = doc.get("config")
        if not isinstance(config_doc, dict):
            raise UndecodableUpdate("update field 'config' is not an object")
        try:
            config = parse_proxy_config(config_doc)
        except ValidationError as exc:  # loc and message only: pydantic's text quotes input
            first = exc.errors(include_url=False, include_input=False)[0]
            raise UndecodableUpdate(
                f"update config is invalid ({exc.error_count()} errors), first at {first['loc']}: "
                f"{first['msg']}"
            ) from None
        except ValueError as exc:  # schemaVersion: names versions, not values
            raise UndecodableUpdate(f"update config: {exc}") from None
        return ConfigLoaded(config, credentials, _string(doc, "source"), _strings(doc, "warnings"))
