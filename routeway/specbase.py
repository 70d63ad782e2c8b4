"""What every spec model of Routeway's resources shares: the pydantic configuration and the
error a cross-field rule raises.

Its own module so that the parts of a spec can live in modules of their own
(`routeway.strategy` beside `routeway.resources`) without importing each other in a circle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class FieldError(ValueError):
    """A cross-field rule broken at `field` (a path relative to the validated model), so that
    `routeway validate` can name `spec.url` rather than just `spec`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SpecModel(BaseModel):
    """Base of every spec part: camelCase names, frozen, unknown fields rejected."""

    # strict: "10", true or "0.5" are not numbers to the API server, so not to us either; nor
    # are YAML's .inf and .nan, which JSON (the ProxyConfig, the API server) cannot carry.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
    )
