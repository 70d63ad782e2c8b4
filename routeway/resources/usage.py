"""Spec parts that govern usage rather than routing (issue 13): rate and token limits, the
response cache, backend pricing, and the gateway's shared store for both.

Kept apart from the routing fields on purpose: none of them is part of a route revision
(routeway.rollout.revision), so raising a limit or a price never starts a canary rollout.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from routeway.durations import Duration
from routeway.resources.meta import SecretKeyRef
from routeway.specbase import SpecModel as _Spec

BYTES_PATTERN = r"^[0-9]+(Ki|Mi|Gi|k|M|G)?$"
_BYTE_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
MAX_CACHE_BYTES = 16 * 1024**3


def parse_bytes(text: str) -> int:
    """A Kubernetes-style byte quantity (`64Mi`, `500k`, `1048576`) as a number of bytes."""
    match = re.fullmatch(BYTES_PATTERN, text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: use a number with an optional unit, e.g. 64Mi, 500k, 1Gi")
    return int(text[: len(text) - len(match.group(1) or "")]) * _BYTE_UNITS[match.group(1) or ""]


def _check_bytes(text: str) -> str:
    size = parse_bytes(text)
    if not 1024 <= size <= MAX_CACHE_BYTES:
        raise ValueError("must be between 1Ki and 16Gi")
    return text


ByteSize = Annotated[
    str,
    AfterValidator(_check_bytes),
    Field(max_length=32, json_schema_extra={"pattern": BYTES_PATTERN, "example": "64Mi"}),
]

PerMinute = Annotated[int, Field(ge=1, le=1_000_000_000)]


class ClientLimitsSpec(_Spec):
    requests_per_minute: PerMinute | None = Field(
        None, description="Requests a minute (a bucket refilled continuously)."
    )
    tokens_per_minute: PerMinute | None = Field(
        None, description="Prompt + completion tokens a minute; reserved before sending, settled from usage."
    )
    tokens_per_day: Annotated[int, Field(ge=1, le=10**12)] | None = Field(
        None, description="Prompt + completion tokens per UTC calendar day."
    )


class RouteLimitsSpec(_Spec):
    requests_per_minute: PerMinute | None = Field(
        None, description="Requests a minute to this route from all clients together (protects its backends)."
    )
    tokens_per_minute: PerMinute | None = Field(
        None, description="Tokens a minute to this route, all clients."
    )
    default_max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        1024,
        description="Completion tokens reserved for a request that sets neither max_tokens nor "
        "max_completion_tokens (settled from the real usage afterwards).",
    )


class CacheSpec(_Spec):
    ttl: Duration = Field("10m", description="How long an answer is served from the cache.")
    max_bytes: ByteSize = Field(
        "64Mi", description="Memory bound per process (least recently used out first)."
    )
    scope: Literal["Client", "Route"] = Field(
        "Client",
        description="Client: each ModelClient has its own entries (no answer crosses teams); "
        "Route: every caller of the route shares them.",
    )


class PricingSpec(_Spec):
    input_per_million_tokens: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        description="Price of a million prompt tokens."
    )
    output_per_million_tokens: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        description="Price of a million completion tokens."
    )
    currency: Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")] = Field(
        "USD", description="ISO 4217 code, e.g. USD, EUR."
    )


REDIS_URL_PATTERN = r"^rediss?://[^\s/?#@]+(/[0-9]{1,2})?$"
REDIS_URL_MESSAGE = (
    "must not carry credentials or options (user:password@, ?password=...): it is rendered "
    "into ConfigMaps; put the password in passwordSecretRef"
)


def _check_redis_url(url: str) -> str:
    if "@" in url or "?" in url or "#" in url:
        raise ValueError(REDIS_URL_MESSAGE)
    if not re.match(REDIS_URL_PATTERN, url):
        raise ValueError("must be redis://host:port or rediss://host:port, optionally /db (0-99)")
    return url


class GatewayRedisSpec(_Spec):
    url: Annotated[
        str,
        AfterValidator(_check_redis_url),
        # The pattern reaches the CRD through the JSON schema; the validator gives a sentence.
        Field(min_length=1, max_length=2048, json_schema_extra={"pattern": REDIS_URL_PATTERN}),
    ] = Field(
        description="redis:// or rediss:// host:port[/db] of the Redis shared by the gateway's pods "
        "(no user:password@ and no query here: passwordSecretRef)."
    )
    password_secret_ref: SecretKeyRef | None = Field(None, description="The Redis password (AUTH).")

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        # The pattern rejects these too; the rule says why, and where the password goes.
        {
            "rule": "!(self.url.contains('@') || self.url.contains('?') || self.url.contains('#'))",
            "message": f"url {REDIS_URL_MESSAGE}",
        },
    ]


class GatewayLimitsSpec(_Spec):
    redis: GatewayRedisSpec | None = Field(
        None,
        description="Share limits and the response cache across the gateway's pods; without it each "
        "pod enforces limit / replicas and caches alone.",
    )
    on_redis_failure: Literal["FailOpen", "FailClosed"] = Field(
        "FailOpen",
        description="Redis unreachable: FailOpen admits without limits, FailClosed answers 503.",
    )
