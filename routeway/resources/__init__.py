"""Typed models of Routeway's custom resources (group `routeway.dev`, version `v1alpha1`).

One source of truth: the CRD YAMLs in `crds/` are generated from these models, the CLI
validates manifests with them, and the operator parses API objects with them. Field names
and descriptions are the public contract (`kubectl explain` shows the descriptions).

Models are frozen: a parsed resource is a value, safe to share between translations.
Unknown spec fields are errors rather than silently ignored, so a typo in a manifest is
reported instead of quietly changing routing.

One module per kind (`backend`, `route`, `gateway`, `client`), usage limits, cache and
pricing (`usage`), their status documents (`status`), the
objects and kind registry (`objects`), shared parts (`meta`) and Secrets (`secret`); this
package re-exports them all, so `from routeway.resources import ModelRoute` stays the way in.
"""

from __future__ import annotations

from routeway.resources.backend import (
    BackendTimeouts,
    MockSpec,
    ModelBackendSpec,
    OutlierDetectionSpec,
)
from routeway.resources.client import (
    ModelClientSpec,
    ModelPattern,
)
from routeway.resources.gateway import (
    AllowedRoutes,
    ClientAuthSpec,
    ConnectionsSpec,
    ModelGatewaySpec,
    ResourceQuantity,
    ResourceRequirementsSpec,
    RouteNamespaces,
    ServiceSpec,
)
from routeway.resources.meta import (
    API_VERSION,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    GROUP,
    HEADER_NAME,
    SECRET_KEY,
    URL_PATTERN,
    VERSION,
    FieldError,
    ObjectMeta,
    ObjectName,
    SecretKeyRef,
    SecretRef,
    UpstreamURL,
)
from routeway.resources.objects import (
    CUSTOM_KINDS,
    KIND_MODELS,
    CustomKind,
    ModelBackend,
    ModelClient,
    ModelGateway,
    ModelRoute,
)
from routeway.resources.route import (
    FallbackRef,
    GatewayRef,
    ModelRouteSpec,
    RetriesSpec,
    RetryOn,
    StickinessSpec,
    WeightedBackendRef,
)
from routeway.resources.secret import (
    SOPS_VALUE,
    Secret,
    SopsMetadata,
    is_sops_encrypted,
)
from routeway.resources.status import (
    ClientUsage,
    Condition,
    ModelBackendStatus,
    ModelClientStatus,
    ModelGatewayStatus,
    ModelRouteStatus,
    RolloutStatus,
    UsageWindow,
)
from routeway.resources.usage import (
    BYTES_PATTERN,
    MAX_CACHE_BYTES,
    ByteSize,
    CacheSpec,
    ClientLimitsSpec,
    GatewayLimitsSpec,
    GatewayRedisSpec,
    PerMinute,
    PricingSpec,
    RouteLimitsSpec,
    parse_bytes,
)

__all__ = [
    "API_VERSION",
    "BYTES_PATTERN",
    "CUSTOM_KINDS",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "GROUP",
    "HEADER_NAME",
    "KIND_MODELS",
    "MAX_CACHE_BYTES",
    "SECRET_KEY",
    "SOPS_VALUE",
    "URL_PATTERN",
    "VERSION",
    "AllowedRoutes",
    "BackendTimeouts",
    "ByteSize",
    "CacheSpec",
    "ClientAuthSpec",
    "ClientLimitsSpec",
    "ClientUsage",
    "Condition",
    "ConnectionsSpec",
    "CustomKind",
    "FallbackRef",
    "FieldError",
    "GatewayLimitsSpec",
    "GatewayRedisSpec",
    "GatewayRef",
    "MockSpec",
    "ModelBackend",
    "ModelBackendSpec",
    "ModelBackendStatus",
    "ModelClient",
    "ModelClientSpec",
    "ModelClientStatus",
    "ModelGateway",
    "ModelGatewaySpec",
    "ModelGatewayStatus",
    "ModelPattern",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelRouteStatus",
    "ObjectMeta",
    "ObjectName",
    "OutlierDetectionSpec",
    "PerMinute",
    "PricingSpec",
    "ResourceQuantity",
    "ResourceRequirementsSpec",
    "RetriesSpec",
    "RetryOn",
    "RolloutStatus",
    "RouteLimitsSpec",
    "RouteNamespaces",
    "Secret",
    "SecretKeyRef",
    "SecretRef",
    "ServiceSpec",
    "SopsMetadata",
    "StickinessSpec",
    "UpstreamURL",
    "UsageWindow",
    "WeightedBackendRef",
    "is_sops_encrypted",
    "parse_bytes",
]
