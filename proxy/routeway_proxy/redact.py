"""Scrub documents shown on the admin port.

The ProxyConfig holds credential *references* only, so there should be nothing to hide; this
is the second line of defence should a secret ever end up in it (a key pasted into a URL, a
future field): known credential values, URL userinfo and values of secret-looking keys are
replaced. References (`credentialRef`, `clientKeyRefs`) stay visible because they say where
a secret lives, not what it is.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"(api[_-]?key|token|secret|password|passwd|authorization|bearer|credential)", re.IGNORECASE
)
_REFERENCE_KEYS = frozenset(
    {
        "credentialRef",
        "credential_ref",
        "clientKeyRefs",
        "client_key_refs",
        "redisPasswordRef",
        "redis_password_ref",
    }
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_text(value: str, secrets: Collection[str]) -> str:
    for secret in secrets:
        if secret and secret in value:
            value = value.replace(secret, REDACTED)
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)


def redact_document(document: Any, secrets: Collection[str] = ()) -> Any:
    """A copy of a JSON-like document with secrets replaced by "<redacted>"."""
    if isinstance(document, dict):
        out: dict[Any, Any] = {}
        for key, value in document.items():
            if (
                isinstance(key, str)
                and key not in _REFERENCE_KEYS
                and _SECRET_KEY.search(key)
                and isinstance(value, str)
                and value
            ):
                out[key] = REDACTED
            else:
                out[key] = redact_document(value, secrets)
        return out
    if isinstance(document, list | tuple):
        return [redact_document(item, secrets) for item in document]
    if isinstance(document, str):
        return redact_text(document, secrets)
    return document
