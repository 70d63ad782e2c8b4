"""The real schemas of the Flux, Argo CD and External Secrets objects in examples/gitops/, for
offline checks.

kubernetes-validate knows only built-in kinds, and no Flux or Argo CD CRD is installed here,
so `core_gitops_schemas.json` holds the `openAPIV3Schema` of each kind the examples use, taken
from the CRDs those projects publish (SOURCES: repository, commit, path), with descriptions,
`status` and Argo CD's `operation` removed to keep it small. `validator(api_version, kind)`
turns one into a JSON Schema that is as strict as the API server's strict field validation:
a field the CRD does not declare is an error, not something silently pruned.

Refresh after a Flux, Argo CD or External Secrets API change: download the CRD files named in
SOURCES at a newer commit, update SOURCES, and run
`.venv/bin/python tests/core/core_gitops_schemas.py CRD.yaml ...` (rewrites the JSON file; the
schemas of CRDs not given are kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS_FILE = Path(__file__).with_name("core_gitops_schemas.json")

SOURCES = {
    "helm.toolkit.fluxcd.io/v2 HelmRelease": "fluxcd/helm-controller@0f61a8607a62be64638f2f912d9487e653960a6e "
    "config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml",
    "kustomize.toolkit.fluxcd.io/v1 Kustomization": "fluxcd/kustomize-controller@186fb3b29138ce82ff61ba1a9370b96a3dd598fe "
    "config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    "source.toolkit.fluxcd.io/v1 GitRepository": "fluxcd/source-controller@39b711b111fa906c3db0a424e252a5d12e48646d "
    "config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml",
    "argoproj.io/v1alpha1 Application": "argoproj/argo-cd@37ee0097cf851bc2dd7665fc081bbce61a7e836e "
    "manifests/crds/application-crd.yaml",
    "external-secrets.io/v1 ExternalSecret": "external-secrets/external-secrets@cc5bfbc2234ace9cb0caff4ea89c435cf517b27b "
    "config/crds/bases/external-secrets.io_externalsecrets.yaml",
}


def load_schemas() -> dict[str, dict[str, Any]]:
    data: dict[str, Any] = json.loads(SCHEMAS_FILE.read_text())
    return {key: schema for key, schema in data["schemas"].items()}


def to_json_schema(schema: Any) -> Any:
    """A Kubernetes structural schema as JSON Schema: x-kubernetes-* markers translated or
    dropped, `nullable` as a null type, and unknown fields forbidden wherever the CRD lists
    properties without preserving unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("format", "nullable"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    """None when the file holds no schema for that kind."""
    schema = load_schemas().get(f"{api_version} {kind}")
    if schema is None:
        return None
    converted = to_json_schema(schema)
    converted["properties"]["metadata"] = {"type": "object"}  # checked by the API server itself
    return jsonschema.Draft7Validator(converted)


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def refresh(crd_files: list[str]) -> None:
    """Replace the schemas the given CRD files hold; the others stay as they are, so one
    project's CRDs can be refreshed (or one added) without downloading every other's."""
    schemas: dict[str, Any] = {k: v for k, v in load_schemas().items() if k in SOURCES}
    for path in crd_files:
        crd = yaml.safe_load(Path(path).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            key = f"{group}/{version['name']} {kind}"
            if key in SOURCES:
                schema = _strip(version["schema"]["openAPIV3Schema"])
                for field in ("status", "operation"):
                    schema["properties"].pop(field, None)
                schemas[key] = schema
    missing = sorted(set(SOURCES) - set(schemas))
    if missing:
        raise SystemExit(f"no schema found for {', '.join(missing)}")
    document = {"sources": SOURCES, "schemas": schemas}
    SCHEMAS_FILE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    refresh(sys.argv[1:])
