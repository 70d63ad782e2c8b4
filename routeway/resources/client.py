"""The ModelClient spec: one team's API key, the models it may call and its limits (issue 13).

A client is a key, not a user: the key's value lives in a Secret (`keySecretRef`), the proxy
holds only its hash, and the client's name (never its key) labels metrics and log lines.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated

from pydantic import AfterValidator, Field

from routeway.resources.meta import SecretKeyRef
from routeway.resources.route import GatewayRef
from routeway.resources.usage import ClientLimitsSpec
from routeway.specbase import SpecModel as _Spec


def _check_pattern(pattern: str) -> str:
    if fnmatch.translate(pattern) and "[" in pattern and "]" not in pattern:
        raise ValueError("an unclosed [ in a model pattern")
    return pattern


ModelPattern = Annotated[
    str,
    AfterValidator(_check_pattern),
    Field(min_length=1, max_length=256, description="A public model name, or a glob such as embed-*."),
]


class ModelClientSpec(_Spec):
    gateway_ref: GatewayRef | None = Field(
        None,
        description="ModelGateway this key is accepted by (its allowedRoutes applies); without it, "
        "the gateway named `default` in the client's namespace.",
    )
    key_secret_ref: SecretKeyRef = Field(description="The Secret key holding this client's API key.")
    models: list[ModelPattern] | None = Field(
        None,
        max_length=256,
        description="Public model names or globs (fnmatch: *, ?, [..]) this key may call; "
        "omitted: every model on the gateway.",
    )
    limits: ClientLimitsSpec | None = Field(None, description="Request and token limits of this key.")
