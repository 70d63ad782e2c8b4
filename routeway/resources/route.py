"""The ModelRoute spec: a public model name → weighted backends, fallbacks, retries, rollout."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from routeway.durations import Duration
from routeway.resources.meta import DNS_LABEL, HEADER_NAME, ObjectName
from routeway.resources.usage import CacheSpec, RouteLimitsSpec
from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec
from routeway.strategy import ProgressDeadline, StrategySpec


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
        description="Upstream outcomes that are retried: connect-failure, timeout (no first byte, "
        "or a stall before anything reached the client), 5xx (502/503/504, or an answer that "
        "broke off before anything reached the client), 429. A backend that answered 429 or 503 "
        "with Retry-After is not called again before then.",
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
    limits: RouteLimitsSpec | None = Field(
        None, description="Limits of this route for all clients together (besides each client's own)."
    )
    cache: CacheSpec | None = Field(
        None, description="Exact-match response cache for chat completions, completions and embeddings."
    )
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
