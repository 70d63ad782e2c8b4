"""The ModelGateway spec: a proxy deployment and who may attach to it."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from routeway.durations import Duration, parse_duration
from routeway.resources.meta import DNS_LABEL, SecretRef
from routeway.resources.usage import GatewayLimitsSpec
from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec


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


_ZERO_DURATION = r"^(0+(\\.0+)?(ms|s|m|h))+$"
"""A duration of 0 in every part (`0s`, `0ms0s`): CEL's `matches` (RE2) on the CRD side."""


class ConnectionsSpec(_Spec):
    """How long the proxy waits for a client and how many connections a worker holds: a slow or
    idle client must not hold a pod's connections (passed to `routeway proxy` as flags, so a
    change rolls the pods)."""

    header_timeout: Duration = Field(
        "10s",
        description="The request line and headers must arrive within this time of their first byte; else 408 and the connection closes.",
    )
    body_timeout: Duration = Field(
        "30s",
        description="Longest gap between two reads of a request body; else 408 and the connection closes.",
    )
    idle_timeout: Duration = Field(
        "60s", description="A keep-alive connection with no request for this long is closed."
    )
    max_per_worker: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Open client connections per worker process; beyond it a new connection gets 503 and is closed.",
    )

    @model_validator(mode="after")
    def _positive_timeouts(self) -> ConnectionsSpec:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if parse_duration(getattr(self, name)) <= 0:
                field = name.split("_")[0] + "Timeout"
                raise FieldError(f"connections.{field}", f"connections.{field} must be longer than 0s")
        return self

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": f"!self.{field}.matches('{_ZERO_DURATION}')",
            "message": f"connections.{field} must be longer than 0s",
        }
        for field in ("headerTimeout", "bodyTimeout", "idleTimeout")
    ]


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
    limits: GatewayLimitsSpec | None = Field(
        None,
        description="Where limits and the response cache are shared across pods (Redis), and what Redis failing means.",
    )
    max_request_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="Larger request bodies get 413."
    )
    access_log: bool = Field(
        False,
        description="One JSON line per request on the proxy's stdout (routeway proxy --access-log).",
    )
    connections: ConnectionsSpec = Field(
        default_factory=ConnectionsSpec,
        description="Client connection timeouts and the per-worker connection cap.",
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
