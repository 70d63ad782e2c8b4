"""crds/ is generated from the models, and the generator refuses what a cluster would refuse.

Matrix:
- the committed crds/ equals the generator's output (a readable diff when not);
- `gen-crds --check` exits 1 with a diff on a stale directory and 0 on a fresh one; without
  --check it writes the files and removes stale `routeway.dev_*.yaml` ones;
- the output is deterministic and carries the "do not edit" header;
- translation rules on small models: optional -> not nullable, extra=forbid -> no
  additionalProperties, dict[str, Any] -> preserve-unknown-fields, default_factory -> default,
  CEL_RULES -> x-kubernetes-validations, gt -> exclusiveMinimum, unions -> refused, unless
  the field states its untyped schema itself (preserve-unknown-fields, as a metric's `max`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from routeway.crdgen import (
    HEADER,
    CRDGenerationError,
    build_all,
    build_openapi_schema,
    diff_directory,
    main,
    render_all,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
EXPECTED_FILES = {
    "routeway.dev_modelbackends.yaml",
    "routeway.dev_modelroutes.yaml",
    "routeway.dev_modelgateways.yaml",
    "routeway.dev_modelclients.yaml",
}


def test_committed_crds_match_the_models() -> None:
    diff = diff_directory(CRDS_DIR, render_all())
    assert not diff, "crds/ is out of date with routeway/resources/; run scripts/gen-crds\n" + "".join(diff)


def test_every_kind_has_one_file_with_the_header() -> None:
    rendered = render_all()
    assert set(rendered) == EXPECTED_FILES
    for name, text in rendered.items():
        assert text.startswith(HEADER), name
        assert yaml.safe_load(text) == build_all()[name]


def test_output_is_deterministic() -> None:
    assert render_all() == render_all()


def test_check_reports_a_stale_directory_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--output-dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == EXPECTED_FILES
    assert main(["--check", "--output-dir", str(tmp_path)]) == 0

    routes = tmp_path / "routeway.dev_modelroutes.yaml"
    routes.write_text(routes.read_text().replace("maxItems: 64", "maxItems: 65"))
    (tmp_path / "routeway.dev_leftovers.yaml").write_text("kind: CustomResourceDefinition\n")
    capsys.readouterr()
    assert main(["--check", "--output-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "-                maxItems: 65" in out and "+                maxItems: 64" in out
    assert "routeway.dev_leftovers.yaml (on disk)" in out
    assert "run scripts/gen-crds" in err

    assert main(["--output-dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == EXPECTED_FILES
    assert main(["--check", "--output-dir", str(tmp_path)]) == 0


def test_gen_crds_script_checks_the_repository() -> None:
    """The wrapper CI calls: `scripts/gen-crds --check` from any working directory."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "gen-crds"), "--check"],
        cwd="/",
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------- translation rules


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(3, gt=0, description="Strictly positive.")
    CEL_RULES: ClassVar[list[dict[str, str]]] = [{"rule": "self.size < 10", "message": "small"}]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="Optional.")
    inner: _Inner = Field(default_factory=_Inner, description="Nested.")
    tags: list[str] = Field(default_factory=list, description="Tags.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    anything: dict[str, Any] | None = Field(None, description="Opaque.")


class _Resource(BaseModel):
    """A test resource."""

    spec: _Spec


def _spec_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = build_openapi_schema(model, "Test")["properties"]["spec"]
    return schema


def test_translation_of_common_field_shapes() -> None:
    spec = _spec_schema(_Resource)
    props = spec["properties"]
    assert "additionalProperties" not in spec
    assert props["name"] == {"type": "string", "description": "Optional."}
    assert props["inner"]["default"] == {}
    assert props["inner"]["x-kubernetes-validations"] == [{"rule": "self.size < 10", "message": "small"}]
    assert props["inner"]["properties"]["size"] == {
        "type": "integer",
        "default": 3,
        "minimum": 0,
        "exclusiveMinimum": True,
        "description": "Strictly positive.",
    }
    assert props["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
        "description": "Tags.",
    }
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["anything"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "Opaque.",
    }
    assert build_openapi_schema(_Resource, "Test")["required"] == ["spec"]


def test_unions_are_refused_with_the_field_path() -> None:
    class Spec(BaseModel):
        port: int | str

    class Resource(BaseModel):
        spec: Spec

    with pytest.raises(CRDGenerationError, match=r"spec\.port: unions"):
        build_openapi_schema(Resource, "Test")


def test_untyped_fields_are_refused() -> None:
    class Spec(BaseModel):
        value: Any

    class Resource(BaseModel):
        spec: Spec

    with pytest.raises(CRDGenerationError, match=r"spec\.value: a structural schema needs a type"):
        build_openapi_schema(Resource, "Test")


def test_a_field_stating_its_untyped_schema_keeps_it() -> None:
    """A number-or-string field can be emitted only as an untyped node, by choice, with value
    validations that apply by the value's own type (see routeway.strategy.MetricMax)."""
    untyped = {"x-kubernetes-preserve-unknown-fields": True, "minimum": 0, "pattern": "^[0-9]+s$"}

    class Spec(BaseModel):
        limit: Annotated[float | str, WithJsonSchema(untyped)] | None = Field(None, description="Either.")

    class Resource(BaseModel):
        spec: Spec

    assert _spec_schema(Resource)["properties"]["limit"] == {**untyped, "description": "Either."}
