"""Every example manifest under examples/ is accepted by the generated CRDs and the models.

Each YAML document of kind ModelBackend, ModelRoute or ModelGateway found under examples/
(any depth, .yaml or .yml) is one test: the API server's steps (crds_apiserver.admit: null
pruning, defaulting, schema with unknown fields rejected, list keys, CEL) must accept it, and
the pydantic model must parse it. Other kinds (Secrets, Namespaces) are not ours to judge.
An examples/ tree without any of our kinds is a failure, not a silent pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crds_apiserver import admit

from routeway.resources import KIND_MODELS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OUR_KINDS = set(KIND_MODELS)


def load_examples() -> list[tuple[str, dict[str, Any]]]:
    """(id, manifest) of every document of our kinds, id = `<file>#<n>: <Kind>/<name>`."""
    found: list[tuple[str, dict[str, Any]]] = []
    files = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        with path.open(encoding="utf-8") as handle:
            documents = list(yaml.safe_load_all(handle))
        for index, doc in enumerate(documents, start=1):
            if isinstance(doc, dict) and doc.get("kind") in OUR_KINDS:
                name = (doc.get("metadata") or {}).get("name", "?")
                found.append((f"{path.relative_to(EXAMPLES)}#{index}: {doc['kind']}/{name}", doc))
    return found


EXAMPLE_DOCS = load_examples()


def test_examples_exist() -> None:
    assert EXAMPLE_DOCS, f"no ModelBackend/ModelRoute/ModelGateway manifests under {EXAMPLES}"


@pytest.mark.parametrize("doc", [d for _, d in EXAMPLE_DOCS], ids=[i for i, _ in EXAMPLE_DOCS])
def test_example_is_accepted_by_the_crd(doc: dict[str, Any], crds_by_kind: dict[str, dict[str, Any]]) -> None:
    assert doc.get("apiVersion") == "routeway.dev/v1alpha1"
    admission = admit(crds_by_kind[doc["kind"]], doc)
    assert admission.accepted, "\n".join(admission.errors)


@pytest.mark.parametrize("doc", [d for _, d in EXAMPLE_DOCS], ids=[i for i, _ in EXAMPLE_DOCS])
def test_example_is_accepted_by_the_model(doc: dict[str, Any]) -> None:
    KIND_MODELS[doc["kind"]].model_validate(doc)
