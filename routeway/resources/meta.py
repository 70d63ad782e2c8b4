"""Shared parts of the resource models: API group and version, name and URL rules, object metadata, Secret references."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from routeway.specbase import FieldError as FieldError
from routeway.specbase import SpecModel as _Spec
from routeway.urls import URL_CREDENTIAL_HINT as URL_CREDENTIAL_HINT
from routeway.urls import URL_PATTERN as URL_PATTERN
from routeway.urls import URL_QUERY_MESSAGE as URL_QUERY_MESSAGE
from routeway.urls import URL_USERINFO_MESSAGE as URL_USERINFO_MESSAGE
from routeway.urls import check_url

GROUP = "routeway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

# The pattern reaches the CRD through the JSON schema; the validator gives people a sentence.
UpstreamURL = Annotated[
    str,
    AfterValidator(check_url),
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
