"""Typed models of Routeway's custom resources (group `routeway.dev`, version `v1alpha1`).

One source of truth: the CRD YAMLs in `crds/` are generated from these models, the CLI
validates manifests with them, and the operator parses API objects with them. Field names
and descriptions are the public contract (`kubectl explain` shows the descriptions).

Models are frozen: a parsed resource is a value, safe to share between translations.
Unknown spec fields are errors rather than silently ignored, so a typo in a manifest is
reported instead of quietly changing routing.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from routeway.durations import Duration
from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec
from routeway.strategy import ProgressDeadline, StrategySpec

GROUP = "routeway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

# http(s), a host without userinfo (no `@` before the path), then anything without spaces.
URL_PATTERN = r"^https?://[^\s/?#@]+([/?#][^\s]*)?$"


def _check_url(url: str) -> str:
    if not re.match(URL_PATTERN, url):
        if re.match(r"^https?://[^\s/?#]*@", url):
            raise ValueError("must not contain user:password@; put the credential in apiKeySecretRef")
        raise ValueError("must be an http:// or https:// URL without spaces, e.g. http://vllm.ml.svc:8000/v1")
    return url


# The pattern reaches the CRD through the JSON schema; the validator gives people a sentence.
UpstreamURL = Annotated[
    str,
    AfterValidator(_check_url),
    Field(max_length=2048, json_schema_extra={"pattern": URL_PATTERN}),
]

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


class ObjectMeta(BaseModel):
    """The parts of `metadata` Routeway reads; the rest is kept by the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    name: ObjectName
    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] = "default"
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecretKeyRef(_Spec):
    """A key of a Secret in the same namespace as the referring object."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)] = Field(
        description="Key within the Secret's data."
    )


class SecretRef(_Spec):
    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")


# ---------------------------------------------------------------------------- ModelBackend


class BackendTimeouts(_Spec):
    connect: Duration = Field("5s", description="Longest wait to open a connection to the upstream.")
    first_byte: Duration = Field(
        "60s",
        description="Longest wait from sending the request to the first response byte "
        "(for a stream: the first token, so it includes prompt processing).",
    )
    idle: Duration = Field(
        "30s",
        description="Longest gap between two streamed chunks: a stalled stream is cut, a long "
        "healthy one is not.",
    )
    total: Duration | None = Field(
        None, description="Optional cap on one upstream attempt from start to last byte."
    )


class OutlierDetectionSpec(_Spec):
    consecutive_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failures in a row (connect errors, 5xx, timeouts) that eject the backend.",
    )
    base_ejection_time: Duration = Field(
        "10s", description="First ejection's length; doubled on each repeated ejection."
    )
    max_ejection_time: Duration = Field("5m", description="Longest ejection.")


class MockSpec(_Spec):
    """Behaviour of the built-in simulated model (provider `mock`)."""

    latency: Duration = Field("0s", description="Delay before a non-streamed response.")
    time_to_first_token: Duration = Field("0s", description="Delay before the first streamed token.")
    tokens_per_second: float = Field(
        0.0, ge=0, description="Streaming speed after the first token; 0 streams as fast as possible."
    )
    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests answered with a 500 error.")
    max_tokens: int = Field(16, ge=1, le=4096, description="Completion length when the request sets none.")


class ModelBackendSpec(_Spec):
    provider: Literal["openai", "mock"] = Field(
        description="Wire protocol of the upstream. `openai`: any OpenAI-compatible server "
        "(vLLM, TGI, Ollama, OpenAI, ...). `mock`: a simulated model inside the gateway."
    )
    url: UpstreamURL | None = Field(
        None,
        description="Base URL as an OpenAI SDK takes it, e.g. http://vllm.ml.svc:8000/v1. "
        "Required for provider `openai`. No user:password@ part: credentials belong in "
        "apiKeySecretRef, never in a URL that is rendered into ConfigMaps.",
    )
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="Model name sent upstream; defaults to the route's public model name."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Credential sent upstream as `Authorization: Bearer <value>`."
    )
    timeouts: BackendTimeouts = Field(default_factory=BackendTimeouts, description="Per-attempt timeouts.")
    max_concurrency: int | None = Field(
        None, ge=1, le=100000, description="Most requests in flight to this backend per proxy pod."
    )
    queue_timeout: Duration = Field(
        "1s", description="Longest wait for a free slot under maxConcurrency before answering 503."
    )
    version: Annotated[str, Field(max_length=63)] | None = Field(
        None, description="Free label shown in metrics and status, e.g. the model build."
    )
    outlier_detection: OutlierDetectionSpec = Field(
        default_factory=OutlierDetectionSpec, description="Passive health checking."
    )
    mock: MockSpec | None = Field(None, description="Simulated behaviour; only for provider `mock`.")

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelBackendSpec:
        if self.provider == "openai" and not self.url:
            raise FieldError("url", "url is required when provider is openai")
        if self.provider != "mock" and self.mock is not None:
            raise FieldError("mock", "mock may only be set when provider is mock")
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.provider != 'openai' || has(self.url)",
            "message": "url is required when provider is openai",
        },
        {
            "rule": "self.provider == 'mock' || !has(self.mock)",
            "message": "mock may only be set when provider is mock",
        },
    ]


# ---------------------------------------------------------------------------- ModelRoute


class GatewayRef(_Spec):
    name: ObjectName = Field(description="Name of the ModelGateway.")
    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = Field(
        None, description="Namespace of the ModelGateway; defaults to the route's namespace."
    )


class WeightedBackendRef(_Spec):
    name: ObjectName = Field(description="Name of a ModelBackend in the route's namespace.")
    weight: int = Field(
        1, ge=0, le=1000000, description="Proportional share of traffic; 0 sends this backend nothing."
    )


class FallbackRef(_Spec):
    name: ObjectName = Field(description="Name of a ModelBackend in the route's namespace.")


RetryOn = Literal["connect-failure", "timeout", "5xx", "429"]


def _default_retry_on() -> list[RetryOn]:
    return ["connect-failure", "5xx", "429"]


class RetriesSpec(_Spec):
    attempts: int = Field(
        1, ge=0, le=10, description="Extra attempts after the first, only before any byte reached the client."
    )
    retry_on: list[RetryOn] = Field(
        default_factory=_default_retry_on,
        max_length=4,
        description="Upstream outcomes that are retried: connect-failure, timeout (first byte), "
        "5xx (502/503/504), 429.",
    )
    backoff: Duration = Field("50ms", description="First backoff; doubled per attempt up to 1s, with jitter.")


class StickinessSpec(_Spec):
    header: Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_NAME)] = Field(
        description="Request header whose value pins a client to one backend (e.g. x-session-id), "
        "so a conversation keeps its prompt cache."
    )


class ModelRouteSpec(_Spec):
    model: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Public model name that clients send in the request body."
    )
    gateway_ref: GatewayRef | None = Field(
        None,
        description="ModelGateway serving this route; without it, the gateway named `default` "
        "in the route's namespace.",
    )
    backends: list[WeightedBackendRef] = Field(
        min_length=1,
        max_length=64,
        description="Weighted split across backends; names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    fallbacks: list[FallbackRef] = Field(
        default_factory=list,
        max_length=16,
        description="Backends tried in order when the chosen ones failed before any byte was sent.",
    )
    retries: RetriesSpec = Field(default_factory=RetriesSpec, description="Retry policy.")
    timeout: Duration | None = Field(None, description="Cap on the whole request, retries included.")
    stickiness: StickinessSpec | None = Field(None, description="Session affinity by a request header.")
    strategy: StrategySpec | None = Field(
        None,
        description="Progressive delivery: how a new revision of this route (its routing fields "
        "and the specs of the backends it uses) replaces the stable one. Without it a change "
        "applies at once.",
    )
    revision_history_limit: int = Field(
        10,
        ge=1,
        le=100,
        description="Past revisions of this route kept, with their outcome, for history and undo.",
    )
    paused: bool = Field(False, description="true freezes a rollout in progress where it stands.")
    progress_deadline: ProgressDeadline = Field(
        "30m",
        description="Longest a rollout may take, 1s to 720h; one not complete by then is rolled back.",
    )

    @model_validator(mode="after")
    def _unique_backends(self) -> ModelRouteSpec:
        seen: set[str] = set()
        for i, backend in enumerate(self.backends):
            if backend.name in seen:
                raise FieldError(
                    f"backends[{i}].name", f"backend names must be unique within a route: {backend.name}"
                )
            seen.add(backend.name)
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.backends.all(b, self.backends.exists_one(c, c.name == b.name))",
            "message": "backend names must be unique within a route",
        },
    ]


# ---------------------------------------------------------------------------- ModelGateway


class ServiceSpec(_Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    port: int = Field(80, ge=1, le=65535, description="Service port clients connect to.")


class RouteNamespaces(_Spec):
    from_: Literal["Same", "All", "List"] = Field(
        "Same",
        alias="from",
        description="Which namespaces' routes may attach: Same (the gateway's), All, or List (`names`).",
    )
    names: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] = Field(
        default_factory=list, max_length=256, description="Namespaces allowed when `from` is List."
    )


class AllowedRoutes(_Spec):
    namespaces: RouteNamespaces = Field(
        default_factory=RouteNamespaces,
        description="Namespaces whose ModelRoutes may attach to this gateway.",
    )


class ClientAuthSpec(_Spec):
    api_key_secret_ref: SecretRef = Field(
        description="Secret whose every value is an accepted client API key (Authorization: Bearer)."
    )


ResourceQuantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")]


class ResourceRequirementsSpec(_Spec):
    requests: dict[str, ResourceQuantity] = Field(
        default_factory=dict, description="e.g. {cpu: 500m, memory: 256Mi}"
    )
    limits: dict[str, ResourceQuantity] = Field(default_factory=dict, description="e.g. {memory: 512Mi}")


class ModelGatewaySpec(_Spec):
    replicas: int = Field(2, ge=0, le=1000, description="Proxy pods.")
    image: Annotated[str, Field(max_length=512)] | None = Field(
        None, description="Proxy image; defaults to the operator's configured image."
    )
    workers: int | None = Field(
        None, ge=1, le=64, description="Worker processes per pod; default: CPU count."
    )
    resources: ResourceRequirementsSpec = Field(
        default_factory=ResourceRequirementsSpec, description="Proxy container resources."
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="How clients reach the proxy.")
    allowed_routes: AllowedRoutes = Field(
        default_factory=AllowedRoutes, description="Which namespaces' ModelRoutes this gateway serves."
    )
    auth: ClientAuthSpec | None = Field(None, description="Client authentication; none: open to the cluster.")
    max_request_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="Larger request bodies get 413."
    )

    @model_validator(mode="after")
    def _names_only_with_list(self) -> ModelGatewaySpec:
        namespaces = self.allowed_routes.namespaces
        if namespaces.from_ != "List" and namespaces.names:
            raise FieldError(
                "allowedRoutes.namespaces.names",
                "allowedRoutes.namespaces.names is only used when from is List",
            )
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.allowedRoutes.namespaces.from == 'List' || size(self.allowedRoutes.namespaces.names) == 0",
            "message": "allowedRoutes.namespaces.names is only used when from is List",
        },
    ]


# ---------------------------------------------------------------------------- status


class Condition(_Spec):
    """A status condition as Kubernetes tooling (kubectl wait, kstatus, Argo CD) reads it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    type: str = Field(description="Condition type, e.g. Ready, Accepted, ResolvedRefs, Programmed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    observed_generation: int | None = Field(None, description="metadata.generation this condition describes.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")


class _Status(_Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    observed_generation: int | None = Field(None, description="metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions, keyed by type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ModelBackendStatus(_Status):
    routes: int | None = Field(None, description="Number of routes sending to this backend.")


class RolloutStatus(_Spec):
    """`status.rollout`: the route's rollout state (routeway.rollout.document writes it). The
    operator keeps no rollout state anywhere else, so timers and handled action tokens are here
    too; the fields people read come first."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    phase: str | None = Field(None, description="Stable, Progressing, Paused or RolledBack.")
    stable_revision: str | None = Field(None, description="Hash of the revision serving as stable.")
    canary_revision: str | None = Field(
        None, description="Hash of the revision being rolled out (or the one rolled back)."
    )
    current_step_index: int | None = Field(None, description="Index of the canary step being run.")
    canary_weight: int | None = Field(None, description="Percent of traffic the last setWeight step set.")
    message: str | None = Field(None, description="Why the phase is what it is, with the numbers.")
    weights: list[dict[str, Any]] = Field(
        default_factory=list, description="Per backend and arm: percent of the route's traffic."
    )
    analysis: list[dict[str, Any]] = Field(
        default_factory=list, description="The last check per metric: stable, canary, limit, verdict."
    )
    last_check: dict[str, Any] | None = Field(
        None, description="The last analysis check: verdict, time, counts."
    )
    failed_checks: int | None = Field(None, description="Failed analysis checks in this rollout.")
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Past revisions with outcome, reason and time, newest first."
    )
    handled_actions: list[dict[str, Any]] = Field(
        default_factory=list, description="Manual action tokens already handled (never replayed)."
    )
    desired_revision: str | None = Field(None, description="Hash of the revision the spec describes.")
    stable_backends: list[str] = Field(default_factory=list, description="Backends of the stable revision.")
    canary_backends: list[str] | None = Field(None, description="Backends of the canary revision.")
    started_at: str | None = Field(None, description="When this rollout started (RFC 3339).")
    step_started_at: str | None = Field(None, description="When the current step started (RFC 3339).")
    deadline_at: str | None = Field(None, description="When progressDeadline runs out (RFC 3339).")
    next_check_at: str | None = Field(None, description="When the next analysis check is due (RFC 3339).")
    paused_by: str | None = Field(None, description="step or inconclusive: what only a promote ends.")
    paused_at: str | None = Field(None, description="Since when Paused (RFC 3339).")
    frozen_at: str | None = Field(None, description="Since when spec.paused froze it (RFC 3339).")


class ModelRouteStatus(_Status):
    backend_weights: str | None = Field(
        None, description="Effective weights being served, e.g. `llama-v1=90,llama-v2=10`."
    )
    gateway: str | None = Field(None, description="namespace/name of the gateway serving this route.")
    config_revision: str | None = Field(None, description="Gateway config revision that programs this route.")
    rollout: RolloutStatus | None = Field(None, description="Progressive delivery of the route's revisions.")


class ModelGatewayStatus(_Status):
    replicas: int | None = Field(None, description="Proxy pods.")
    ready_replicas: int | None = Field(None, description="Proxy pods ready.")
    address: str | None = Field(None, description="In-cluster URL of the gateway's OpenAI-compatible API.")
    config_revision: str | None = Field(None, description="Revision of the ProxyConfig applied.")
    routes: int | None = Field(None, description="Number of routes served.")
    proxies: int | None = Field(
        None, description="Ready proxy pods serving configRevision, as last read from their admin ports."
    )


# ---------------------------------------------------------------------------- objects


class _Object(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")
    KIND: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    PLURAL: ClassVar[str]

    api_version: Literal["routeway.dev/v1alpha1"] = Field("routeway.dev/v1alpha1", alias="apiVersion")
    metadata: ObjectMeta

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name


class ModelBackend(_Object):
    """One upstream serving endpoint (vLLM, TGI, Ollama, OpenAI, or the built-in mock)."""

    KIND: ClassVar[str] = "ModelBackend"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mb",)
    PLURAL: ClassVar[str] = "modelbackends"
    kind: Literal["ModelBackend"] = "ModelBackend"
    status: ModelBackendStatus | None = None
    spec: ModelBackendSpec


class ModelRoute(_Object):
    """A public model name mapped to weighted backends, fallbacks and retries."""

    KIND: ClassVar[str] = "ModelRoute"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mr",)
    PLURAL: ClassVar[str] = "modelroutes"
    kind: Literal["ModelRoute"] = "ModelRoute"
    status: ModelRouteStatus | None = None
    spec: ModelRouteSpec


class ModelGateway(_Object):
    """A deployment of proxy pods serving the routes attached to it."""

    KIND: ClassVar[str] = "ModelGateway"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mgw",)
    PLURAL: ClassVar[str] = "modelgateways"
    kind: Literal["ModelGateway"] = "ModelGateway"
    status: ModelGatewayStatus | None = None
    spec: ModelGatewaySpec = Field(default_factory=ModelGatewaySpec)


# What SOPS writes for one encrypted value (getsops/sops aes/cipher.go); `data` may be empty.
SOPS_VALUE = re.compile(r"^ENC\[AES256_GCM,data:[^,\]]*,iv:[^,\]]+,tag:[^,\]]+,type:[a-z]+\]$")


def is_sops_encrypted(value: object) -> bool:
    """Whether `value` is one SOPS-encrypted value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`.
    Such a string is ciphertext, never a credential: nothing may decode it or send it upstream."""
    return isinstance(value, str) and SOPS_VALUE.match(value) is not None


class SopsMetadata(BaseModel):
    """The top-level `sops:` block SOPS adds to a file it encrypts (how Flux keeps Secrets in
    Git). Only its presence matters here; `mac` and `version` are what every SOPS version
    writes, so they tell the block from a stray `sops:` key. Key groups are not read."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    mac: str
    version: str | int | float


class Secret(BaseModel):
    """A core/v1 Secret: translation only needs its key names; values stay with the caller.

    A SOPS-encrypted Secret (`sops` set) is opaque: its key names are in clear text, so
    references to them are checked, but its values are ciphertext and are neither decoded nor
    checked; `routeway.credentials.secret_value` never returns one of them."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")
    api_version: Literal["v1"] = Field("v1", alias="apiVersion")
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict, alias="stringData")
    sops: SopsMetadata | None = None

    @model_validator(mode="after")
    def _values_are_readable(self) -> Secret:
        for where, values in (("data", self.data), ("stringData", self.string_data)):
            for key, value in values.items():
                if is_sops_encrypted(value):
                    if self.sops is None:
                        raise FieldError(
                            f"{where}.{key}",
                            "encrypted by SOPS, but the document has no top-level sops block: "
                            "keep the file as `sops --encrypt` wrote it",
                        )
                    continue
                if where == "data":
                    try:
                        base64.b64decode("".join(value.split()), validate=True)
                    except (binascii.Error, ValueError):
                        raise FieldError(
                            f"data.{key}", "not valid base64 (use stringData for plain text)"
                        ) from None
        return self

    @property
    def encrypted(self) -> bool:
        """Encrypted with SOPS: usable for its key names, not for its values."""
        return self.sops is not None

    @property
    def key_names(self) -> frozenset[str]:
        """Key names, as the Secret the API server stores would have them."""
        return frozenset(self.data) | frozenset(self.string_data)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name


CUSTOM_KINDS: tuple[type[ModelBackend] | type[ModelRoute] | type[ModelGateway], ...] = (
    ModelBackend,
    ModelRoute,
    ModelGateway,
)
KIND_MODELS: dict[str, type[_Object]] = {k.KIND: k for k in CUSTOM_KINDS}
