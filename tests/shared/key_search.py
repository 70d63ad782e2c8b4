"""Planted keys and the forms they are searched for in (the no-leak proofs of serve and of the
operator share them)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from urllib.parse import quote, quote_plus


def planted(tag: str) -> str:
    """A key with characters that change under URL-encoding and are not in base64."""
    return f"sk-{tag}/PLANTED{tag.upper()}q7+Zx="


def forms(key: str) -> dict[str, str]:
    raw = key.encode()
    return {
        "raw": key,
        "middle": key.split("/")[1].split("+")[0],
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "url-encoded": quote(key, safe=""),
        "url-encoded-plus": quote_plus(key),
        "hex": raw.hex(),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "json-escaped": key.replace("/", "\\/"),
    }


def find_leaks(documents: dict[str, str], keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """(where, which key, which form) for every key found in any form."""
    found = []
    for where, text in documents.items():
        lowered = text.lower()
        for key in keys:
            for form, value in forms(key).items():
                if value in text or (form in ("hex", "sha256") and value in lowered):
                    found.append((where, key, form))
    return found
