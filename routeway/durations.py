"""Durations as Kubernetes users write them (`500ms`, `2s`, `5m`, `1h30m`).

Kept as strings in the resources (what `kubectl get -o yaml` shows back) and converted to
seconds only when rendering the ProxyConfig, so the proxy never parses text on its hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> float:
    """Return seconds; raises ValueError naming the accepted form."""
    if not _WHOLE.match(text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 500ms, 2s, 5m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def _check(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    AfterValidator(_check),
    # The pattern goes to the JSON schema (and so the CRD) only: `_check` gives a clearer
    # message than pydantic's pattern error for people reading `routeway validate`.
    Field(json_schema_extra={"pattern": DURATION_PATTERN, "example": "30s"}),
]
"""A duration field: validated like the CRD's pattern, stored as written."""


@dataclass(frozen=True)
class DurationRange:
    """Inclusive bounds of a duration field, stated once for both validators: `check` is the
    pydantic one, `field()` carries the pattern and a CEL rule (standard CEL `duration()`,
    which reads every string the pattern admits) into the CRD.

    Upper bounds are also what keeps the two in agreement: CEL durations overflow at about
    ten thousand years, where the rule would fail and pydantic would not.
    """

    name: str  # how the message names the field, e.g. `pause.duration`
    low: str
    high: str

    @property
    def message(self) -> str:
        return f"{self.name} must be between {self.low} and {self.high}"

    def check(self, text: str) -> str:
        if not parse_duration(self.low) <= parse_duration(text) <= parse_duration(self.high):
            raise ValueError(self.message)
        return text

    def field(self) -> Any:
        """The `Field(...)` to put in the type's `Annotated` metadata."""
        rule = f"duration(self) >= duration('{self.low}') && duration(self) <= duration('{self.high}')"
        return Field(
            json_schema_extra={
                "pattern": DURATION_PATTERN,
                "x-kubernetes-validations": [{"rule": rule, "message": self.message}],
            }
        )
