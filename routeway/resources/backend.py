"""The ModelBackend spec: one upstream serving endpoint."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from routeway.durations import Duration
from routeway.resources.meta import URL_QUERY_MESSAGE, URL_USERINFO_MESSAGE, SecretKeyRef, UpstreamURL
from routeway.resources.usage import PricingSpec
from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec


class BackendTimeouts(_Spec):
    connect: Duration = Field("5s", description="Longest wait to open a connection to the upstream.")
    first_byte: Duration = Field(
        "60s",
        description="Longest wait from sending the request to the first response byte "
        "(for a stream: the first token, so it includes prompt processing).",
    )
    idle: Duration = Field(
        "30s",
        description="Longest gap between two bytes received after the first one, whole events or "
        "not: a stalled answer is cut (retried if nothing reached the client yet), a long or "
        "slow but steady one is not.",
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
        "Required for provider `openai`. No user:password@ part, no query string and no "
        "fragment: the API path is appended to it, and credentials belong in apiKeySecretRef, "
        "never in a URL that is rendered into ConfigMaps.",
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
    pricing: PricingSpec | None = Field(
        None, description="What its tokens cost: routeway_cost_total and ModelClient status add it up."
    )

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
        # The schema's pattern rejects these too; the rules say why, and where the key goes.
        {
            "rule": "!has(self.url) || !self.url.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')",
            "message": f"url {URL_USERINFO_MESSAGE}",
        },
        {
            "rule": "!has(self.url) || !(self.url.contains('?') || self.url.contains('#'))",
            "message": f"url {URL_QUERY_MESSAGE}",
        },
    ]
