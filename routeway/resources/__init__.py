"""Typed models of Routeway's custom resources (group `routeway.dev`, version `v1alpha1`).

One source of truth: the CRD YAMLs in `crds/` are generated from these models, the CLI
validates manifests with them, and the operator parses API objects with them. Field names
and descriptions are the public contract (`kubectl explain` shows the descriptions).

Models are frozen: a parsed resource is a value, safe to share between translations.
Unknown spec fields are errors rather than silently ignored, so a typo in a manifest is
reported instead of quietly changing routing.

One module per kind (`backend`, `route`, `gateway`), their status documents (`status`), the
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
from routeway.resources.gateway import (
    AllowedRoutes,
    ClientAuthSpec,
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
    ModelBackend,
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
    Condition,
    ModelBackendStatus,
    ModelGatewayStatus,
    ModelRouteStatus,
    RolloutStatus,
)

__all__ = [
    "API_VERSION",
    "CUSTOM_KINDS",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "GROUP",
    "HEADER_NAME",
    "KIND_MODELS",
    "SECRET_KEY",
    "SOPS_VALUE",
    "URL_PATTERN",
    "VERSION",
    "AllowedRoutes",
    "BackendTimeouts",
    "ClientAuthSpec",
    "Condition",
    "FallbackRef",
    "FieldError",
    "GatewayRef",
    "MockSpec",
    "ModelBackend",
    "ModelBackendSpec",
    "ModelBackendStatus",
    "ModelGateway",
    "ModelGatewaySpec",
    "ModelGatewayStatus",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelRouteStatus",
    "ObjectMeta",
    "ObjectName",
    "OutlierDetectionSpec",
    "ResourceQuantity",
    "ResourceRequirementsSpec",
    "RetriesSpec",
    "RetryOn",
    "RolloutStatus",
    "RouteNamespaces",
    "Secret",
    "SecretKeyRef",
    "SecretRef",
    "ServiceSpec",
    "SopsMetadata",
    "StickinessSpec",
    "UpstreamURL",
    "WeightedBackendRef",
    "is_sops_encrypted",
]
