"""The `ProxyConfig` document: the one contract between the control plane and the proxy.

Translation produces it, the operator stores it in a ConfigMap (`routeway.configstore`),
`routeway serve` keeps it in memory, a proxy supervisor sends it to its workers
(`routeway.configupdate`), and the proxy serves it. The proxy never sees a Kubernetes object, only this.

Why a separate schema from the custom resources: resources are what people write (defaults
implicit, references by name, durations as strings); the ProxyConfig is what a data plane
needs (everything resolved to ids, durations in seconds, defaults applied, sorted), so the
proxy has nothing left to decide and two renders of the same input are byte-identical.

Credentials never appear here: a backend carries a `credentialRef` (namespace/name/key of a
Secret); the value is looked up at run time in a separate credential store, which holds a
backend credential's value and a client key's hash only (`hash_client_key`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from routeway.gcpause import gc_paused
from routeway.urls import check_proxy_url

SCHEMA_VERSION = 1
"""Bumped on any change a proxy of the previous version would misread."""

SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})

RetryReason = Literal["connect-failure", "timeout", "5xx", "429"]
"""Upstream outcomes a route may retry: connection failure, first-byte timeout,
502/503/504, and 429. Never retried: an upstream 4xx other than 429 (the client's fault)."""

DEFAULT_RETRY_ON: tuple[RetryReason, ...] = ("connect-failure", "5xx", "429")


class _Doc(BaseModel):
    # Finite numbers only: the document travels as JSON (ConfigMap, file, worker update), where
    # infinity and NaN would silently become null.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Timeouts(_Doc):
    """Seconds. `idle` bounds the gap between streamed chunks; `total` is optional so long
    healthy generations are not cut by a wall-clock cap."""

    connect: float
    first_byte: float = Field(alias="firstByte")
    idle: float
    total: float | None = None


class OutlierDetection(_Doc):
    """Passive health: after `consecutive_failures` failures in a row a backend is ejected
    for `base_ejection` seconds, doubled on each repeated ejection up to `max_ejection`."""

    consecutive_failures: int = Field(alias="consecutiveFailures")
    base_ejection: float = Field(alias="baseEjection")
    max_ejection: float = Field(alias="maxEjection")


class MockBehaviour(_Doc):
    """Knobs of the built-in simulated model (provider `mock`)."""

    latency: float = 0.0
    time_to_first_token: float = Field(0.0, alias="timeToFirstToken")
    tokens_per_second: float = Field(0.0, alias="tokensPerSecond")  # 0 = unthrottled
    error_rate: float = Field(0.0, alias="errorRate")
    max_tokens: int = Field(16, alias="maxTokens")
    embedding_dimensions: int = Field(8, alias="embeddingDimensions")


class Pricing(_Doc):
    """Price of a million tokens, in `currency`: what routeway_cost_total adds up."""

    input_per_million: float = Field(alias="inputPerMillion")
    output_per_million: float = Field(alias="outputPerMillion")
    currency: str = "USD"


class BackendConfig(_Doc):
    id: str  # "namespace/name"
    namespace: str
    name: str
    provider: Literal["openai", "mock"]
    url: str | None = None  # base URL as an OpenAI SDK takes it, e.g. http://vllm:8000/v1
    version: str | None = None
    credential_ref: str | None = Field(None, alias="credentialRef")  # "namespace/secret/key"
    timeouts: Timeouts
    max_concurrency: int | None = Field(None, alias="maxConcurrency")
    queue_timeout: float = Field(alias="queueTimeout")  # bounded wait for a concurrency slot
    outlier_detection: OutlierDetection = Field(alias="outlierDetection")
    mock: MockBehaviour | None = None
    pricing: Pricing | None = None

    @field_validator("url")
    @classmethod
    def _url_holds_no_credential(cls, url: str | None) -> str | None:
        """A hand-written config (`routeway proxy --config`): no query or fragment, which would
        break the upstream path the proxy appends (routeway.urls.check_proxy_url)."""
        return None if url is None else check_proxy_url(url)


class Target(_Doc):
    """One backend a route sends to, with the model name to send upstream."""

    backend: str  # BackendConfig.id
    model: str
    weight: int = 0


class Retries(_Doc):
    attempts: int  # extra attempts after the first, on the same or another weighted backend
    retry_on: tuple[RetryReason, ...] = Field(DEFAULT_RETRY_ON, alias="retryOn")
    backoff_base: float = Field(0.05, alias="backoffBase")
    backoff_max: float = Field(1.0, alias="backoffMax")


class RouteLimits(_Doc):
    """A route's own limits, for all its clients together (None: no such limit)."""

    requests_per_minute: int | None = Field(None, alias="requestsPerMinute")
    tokens_per_minute: int | None = Field(None, alias="tokensPerMinute")
    default_max_tokens: int = Field(1024, alias="defaultMaxTokens")  # reserved when a request sets none


class CacheConfig(_Doc):
    ttl: float  # seconds
    max_bytes: int = Field(alias="maxBytes")
    scope: Literal["Client", "Route"] = "Client"


class CanaryArm(_Doc):
    """The canary revision of a route in a rollout: the routing fields of that revision, the
    percent of the route's traffic it gets, and its pinned backend specs (see
    `RouteConfig.pinned_backends`). The route's own fields are then the stable revision's."""

    revision: str  # the canary revision's hash (routeway.rollout.revision)
    weight: float = Field(ge=0, le=100)  # percent of the route's traffic; 0 while not ready
    targets: tuple[Target, ...]
    fallbacks: tuple[Target, ...] = ()
    retries: Retries
    timeout: float | None = None
    sticky_header: str | None = Field(None, alias="stickyHeader")
    pinned_backends: tuple[BackendConfig, ...] = Field((), alias="pinnedBackends")


class RouteConfig(_Doc):
    id: str  # "namespace/name"
    namespace: str
    name: str
    model: str  # the public model name clients send
    generation: int | None = None  # metadata.generation rendered, so status can say "Programmed"
    targets: tuple[Target, ...]  # weighted; weight 0 targets receive no traffic
    fallbacks: tuple[Target, ...] = ()  # tried in order after the weighted choice failed
    retries: Retries
    timeout: float | None = None  # whole-request cap in seconds across attempts
    sticky_header: str | None = Field(None, alias="stickyHeader")
    # Rollouts (routeway.rollout). `revision`: the hash of the route revision these fields are
    # (the stable one during a rollout); set by the adapters that run rollouts, and the key the
    # proxy observes this arm's attempts under. `pinned_backends`: specs of backends this
    # revision uses that differ from (or are missing in) `ProxyConfig.backends` — a revision
    # keeps serving the backend spec it was made with, so during a rollout the same backend id
    # can have two specs, one per arm. A target's backend id is looked up here first.
    revision: str | None = None
    pinned_backends: tuple[BackendConfig, ...] = Field((), alias="pinnedBackends")
    canary: CanaryArm | None = None  # a rollout in progress: the second arm
    # Usage, not routing (never part of a revision): the route's limits and response cache.
    limits: RouteLimits | None = None
    cache: CacheConfig | None = None


class ClientLimits(_Doc):
    requests_per_minute: int | None = Field(None, alias="requestsPerMinute")
    tokens_per_minute: int | None = Field(None, alias="tokensPerMinute")
    tokens_per_day: int | None = Field(None, alias="tokensPerDay")


class ClientConfig(_Doc):
    """A ModelClient accepted by the gateway: its key by reference (the credential store holds
    only the key's hash), the models it may call, its limits."""

    id: str  # "namespace/name": what labels its metrics and log lines
    key_ref: str = Field(alias="keyRef")  # "namespace/secret/key"
    models: tuple[str, ...] | None = None  # names or fnmatch globs; None: every model
    limits: ClientLimits | None = None


class GatewayLimits(_Doc):
    """Where limits and the cache are shared (Redis) and what its failure means."""

    redis_url: str | None = Field(None, alias="redisUrl")
    redis_password_ref: str | None = Field(None, alias="redisPasswordRef")  # "namespace/secret/key"
    on_redis_failure: Literal["FailOpen", "FailClosed"] = Field("FailOpen", alias="onRedisFailure")
    replicas: int = 1  # pods sharing the limits when there is no Redis: each enforces limit / replicas


class GatewayConfig(_Doc):
    namespace: str
    name: str
    max_body_bytes: int = Field(alias="maxBodyBytes")
    # Client authentication: when non-empty, a request must carry `Authorization: Bearer <k>`
    # where <k> is the value of one of these credential refs; otherwise 401.
    client_key_refs: tuple[str, ...] = Field((), alias="clientKeyRefs")
    # True whenever the gateway configures auth, even if its key Secret is missing or empty:
    # authentication then fails closed (every request 401) instead of opening the gateway.
    require_client_key: bool = Field(False, alias="requireClientKey")
    clients: tuple[ClientConfig, ...] = ()  # ModelClients, sorted by id
    limits: GatewayLimits = GatewayLimits()


class ProxyConfig(_Doc):
    schema_version: int = Field(SCHEMA_VERSION, alias="schemaVersion")
    revision: str = ""  # content hash of everything else; set by `with_revision`
    gateway: GatewayConfig
    backends: tuple[BackendConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()

    def to_document(self) -> dict[str, Any]:
        """JSON-ready dict with the public (camelCase) field names."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, so equal configs are equal byte strings."""
        return orjson.dumps(self.to_document(), option=orjson.OPT_SORT_KEYS)

    def content_hash(self) -> str:
        """Hash of the canonical document with `revision` blanked: the same function
        `routeway.render` applies to the plain document, so both agree."""
        doc = self.to_document()
        doc["revision"] = ""
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def with_revision(self) -> ProxyConfig:
        """Return a copy whose `revision` is the hash of its content (revision excluded)."""
        return self.model_copy(update={"revision": self.content_hash()})


class UnsupportedSchemaVersion(ValueError):
    """A config written by a newer control plane: keep serving the last good one."""


def parse_proxy_config(raw: bytes | str | dict[str, Any]) -> ProxyConfig:
    """Parse and check a ProxyConfig document; raises ValueError (pydantic or version)."""
    data: Any = raw if isinstance(raw, dict) else orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("ProxyConfig must be a JSON object")
    version = data.get("schemaVersion")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedSchemaVersion(
            f"ProxyConfig schemaVersion {version!r} is not supported by this proxy "
            f"(supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    with gc_paused():  # a 10,000-route config is ~40,000 objects that all stay alive
        return ProxyConfig.model_validate(data)


KEY_HASH_PREFIX = "sha256:"
_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def hash_client_key(key: str) -> str:
    """What the credential store holds for a client key (never its value; see
    `routeway.credentials`): `sha256:` and the hex digest of the key's UTF-8 bytes. The proxy
    computes the same digest of the key a caller presents."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hash_digest(stored: str) -> bytes | None:
    """The 32-byte digest of a stored client key hash, or None when `stored` is not of that
    form: a plain value (an older control plane's store) must never be accepted as a key."""
    if _KEY_HASH.fullmatch(stored) is None:
        return None
    return bytes.fromhex(stored[len(KEY_HASH_PREFIX) :])


def credential_store_key(ref: str) -> str:
    """Map a `namespace/secret/key` credential ref to a valid Secret data key.

    Namespace and secret names cannot contain `_`, so the first two `_` split it back.
    """
    namespace, name, key = ref.split("/", 2)
    return f"{namespace}_{name}_{key}"


def credential_ref_from_store_key(store_key: str) -> str:
    namespace, name, key = store_key.split("_", 2)
    return f"{namespace}/{name}/{key}"
