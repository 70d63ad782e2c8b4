"""Secrets as Routeway reads them: key names (never values) and SOPS-encrypted values recognised."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routeway.resources.meta import ObjectMeta
from routeway.specbase import FieldError as FieldError

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
