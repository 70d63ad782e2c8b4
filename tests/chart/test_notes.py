"""NOTES.txt renders in both scopes, and the first resources it tells users to apply are valid.

`helm install --dry-run=client` renders NOTES.txt without a cluster; the manifests between
`cat <<'YAML'` and `YAML` are parsed with the same models the CRDs are generated from.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeway.manifests import parse_object

from .conftest import CHART, RELEASE, RELEASE_NAMESPACE, Helm


def render_notes(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        RELEASE_NAMESPACE,
        "--values",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    _, _, notes = result.stdout.partition("NOTES:\n")
    assert notes, result.stdout[-2000:]
    return notes


@pytest.mark.parametrize(
    ("values", "namespace"),
    [({}, None), ({"watchNamespaces": ["team-a"]}, "team-a")],
    ids=["all-namespaces", "watch-namespaces"],
)
def test_notes_first_resources_are_valid(
    helm: Helm, tmp_path: Path, values: dict[str, Any], namespace: str | None
) -> None:
    notes = render_notes(helm, tmp_path, values)
    _, _, rest = notes.partition("<<'YAML'")
    block, _, _ = rest.partition("\n  YAML\n")
    assert block, notes
    documents = [d for d in yaml.safe_load_all(textwrap.dedent(block.partition("\n")[2])) if d]
    kinds = sorted(parse_object(d).kind for d in documents)
    assert kinds == ["ModelBackend", "ModelGateway", "ModelRoute"]
    if namespace:
        assert f"kubectl apply -n {namespace} -f -" in notes
        assert f"-n {namespace} wait --for=condition=Ready modelroute/chat" in notes
    assert f"deployment/{RELEASE}-routeway" in notes
