"""Local mode loading: implicit gateways, gateway choice, credentials from Secrets in the files,
problems reported instead of raised."""

from __future__ import annotations

from pathlib import Path

from routeway.local import load_local

ROOT = Path(__file__).resolve().parents[2]

ROUTE = """
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat, namespace: %s}
spec: {model: chat, backends: [{name: a}]%s}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: a, namespace: %s}
spec: {provider: openai, url: "http://a/v1", apiKeySecretRef: {name: creds, key: k}}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: %s}
stringData: {k: sk-local}
"""


def test_quickstart_loads_with_its_gateway():
    loaded = load_local([str(ROOT / "examples" / "quickstart")])
    assert loaded.problems == ()
    assert loaded.config is not None
    assert (loaded.config.gateway.namespace, loaded.config.gateway.name) == ("default", "default")
    assert sorted(r.model for r in loaded.config.routes) == ["chat", "text-embedding"]
    assert len(loaded.watched) == 3


def test_implicit_gateway_when_files_hold_none(tmp_path: Path):
    (tmp_path / "r.yaml").write_text(ROUTE % ("team", "", "team", "team"))
    loaded = load_local([str(tmp_path)])
    assert loaded.problems == ()
    assert loaded.config is not None
    assert (loaded.config.gateway.namespace, loaded.config.gateway.name) == ("team", "default")
    assert loaded.credentials == {"team/creds/k": "sk-local"}


def test_explicit_gateways_are_taken_as_written(tmp_path: Path):
    gw = "apiVersion: routeway.dev/v1alpha1\nkind: ModelGateway\nmetadata: {name: other}\n---\n"
    (tmp_path / "r.yaml").write_text(gw + ROUTE % ("default", "", "default", "default"))
    loaded = load_local([str(tmp_path)])
    assert any("GatewayNotFound" in p for p in loaded.problems)
    assert loaded.config is not None and loaded.config.routes == ()  # `other` serves nothing


def test_named_gateway_missing(tmp_path: Path):
    (tmp_path / "r.yaml").write_text(ROUTE % ("default", "", "default", "default"))
    loaded = load_local([str(tmp_path)], gateway="nope")
    assert loaded.config is None and loaded.blocking
    assert loaded.problems[-1] == f"{tmp_path}: no ModelGateway 'nope' found (gateways: default/default)"


def test_several_gateways_need_a_choice(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(ROUTE % ("team-a", "", "team-a", "team-a"))
    (tmp_path / "b.yaml").write_text(ROUTE % ("team-b", "", "team-b", "team-b"))
    loaded = load_local([str(tmp_path)])
    assert loaded.config is None and loaded.blocking
    assert (
        "several gateways (team-a/default, team-b/default): choose one with --gateway" in loaded.problems[-1]
    )
    chosen = load_local([str(tmp_path)], gateway="team-b/default")
    assert chosen.config is not None and chosen.config.gateway.namespace == "team-b"
    ambiguous = load_local([str(tmp_path)], gateway="default")
    assert "is ambiguous" in ambiguous.problems[-1]


def test_translation_findings_do_not_block(tmp_path: Path):
    broken_ref = ROUTE % ("default", "", "default", "default")
    extra = "---\napiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: other}\nspec: {model: other, backends: [{name: ghost}]}\n"
    (tmp_path / "r.yaml").write_text(broken_ref + extra)
    loaded = load_local([str(tmp_path)])
    assert not loaded.blocking
    assert loaded.config is not None
    assert [r.model for r in loaded.config.routes] == ["chat", "other"]
    assert [t.backend for t in loaded.config.routes[1].targets] == []
    assert any("BackendNotFound" in p for p in loaded.problems)


def test_broken_file_is_a_problem_not_an_exception(tmp_path: Path):
    (tmp_path / "r.yaml").write_text("kind: [")
    loaded = load_local([str(tmp_path)])
    assert loaded.config is None and loaded.blocking
    assert any("malformed YAML" in p for p in loaded.problems)
