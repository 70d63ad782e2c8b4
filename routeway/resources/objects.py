"""The API objects: kind, metadata, spec and status together, and the kind registry."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from routeway.resources.backend import ModelBackendSpec
from routeway.resources.client import ModelClientSpec
from routeway.resources.gateway import ModelGatewaySpec
from routeway.resources.meta import ObjectMeta
from routeway.resources.route import ModelRouteSpec
from routeway.resources.status import (
    ModelBackendStatus,
    ModelClientStatus,
    ModelGatewayStatus,
    ModelRouteStatus,
)
from routeway.specbase import FieldError as FieldError


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


class ModelClient(_Object):
    """One team's API key: the gateway that accepts it, the models it may call, its limits."""

    KIND: ClassVar[str] = "ModelClient"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mc",)
    PLURAL: ClassVar[str] = "modelclients"
    kind: Literal["ModelClient"] = "ModelClient"
    status: ModelClientStatus | None = None
    spec: ModelClientSpec


CustomKind = type[ModelBackend] | type[ModelRoute] | type[ModelGateway] | type[ModelClient]
CUSTOM_KINDS: tuple[CustomKind, ...] = (ModelBackend, ModelRoute, ModelGateway, ModelClient)
KIND_MODELS: dict[str, type[_Object]] = {k.KIND: k for k in CUSTOM_KINDS}
