"""NOTES.txt renders in both scopes and with the chart's own gateway, and the first resources
it tells users to apply are valid (and attach to the chart's gateway when there is one).

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
from routeway.resources import ModelRoute

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


DEFAULT_GATEWAY = {
    "watchNamespaces": ["team-a", "team-b"],
    "defaultGateway": {"enabled": True, "name": "llm", "namespace": "team-b"},
}


@pytest.mark.parametrize(
    ("values", "namespace", "gateway"),
    [({}, None, None), ({"watchNamespaces": ["team-a"]}, "team-a", None), (DEFAULT_GATEWAY, "team-b", "llm")],
    ids=["all-namespaces", "watch-namespaces", "chart-gateway"],
)
def test_notes_first_resources_are_valid(
    helm: Helm, tmp_path: Path, values: dict[str, Any], namespace: str | None, gateway: str | None
) -> None:
    """Without a chart gateway the notes create one; with it, the route attaches to it, beside it."""
    notes = render_notes(helm, tmp_path, values)
    _, _, rest = notes.partition("<<'YAML'")
    block, _, _ = rest.partition("\n  YAML\n")
    assert block, notes
    documents = [d for d in yaml.safe_load_all(textwrap.dedent(block.partition("\n")[2])) if d]
    parsed = {parse_object(d).kind: parse_object(d) for d in documents}
    route = parsed["ModelRoute"]
    assert isinstance(route, ModelRoute)
    if gateway is None:
        assert sorted(parsed) == ["ModelBackend", "ModelGateway", "ModelRoute"]
        assert route.spec.gateway_ref is not None
        assert route.spec.gateway_ref.name == parsed["ModelGateway"].name
    else:
        assert sorted(parsed) == ["ModelBackend", "ModelRoute"]
        assert route.spec.gateway_ref is not None and route.spec.gateway_ref.name == gateway
        assert f"ModelGateway {namespace}/{gateway}" in notes
    if namespace:
        assert f"kubectl apply -n {namespace} -f -" in notes
        assert f"-n {namespace} wait --for=condition=Ready modelroute/chat" in notes
    assert f"deployment/{RELEASE}-routeway" in notes
