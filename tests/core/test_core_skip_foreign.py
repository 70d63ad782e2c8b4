"""`--skip-foreign`: validate, render and serve pointed at a folder that holds more than Routeway.

Matrix: a GitOps-like folder (Routeway objects, a Secret they use, ConfigMap, Namespace, Flux
and Argo CD objects, kustomization.yaml, a Helm values file, a JSON patch list, a JSON file,
a Lua file, a `kind: List` mixing both) fails without the flag, one line per foreign document
and a hint, and passes with it, the skipped documents counted per kind on stderr; Secrets are
still read (a credential reference resolves); still reported with the flag: a broken Routeway
object, a Routeway kind under a wrong apiVersion, an unknown kind in routeway.dev, a bad Secret,
a foreign file that is not valid YAML; render prints the same count; serve's source and the
loader take the same option; without the flag nothing changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from routeway.cli import build_parser
from routeway.local import LocalLoad, load_local
from routeway.manifests import NOT_AN_OBJECT, load_manifests
from routeway.serve import LocalManifestSource

ROUTEWAY = str(Path(sys.executable).parent / "routeway")

ROUTEWAY_OBJECTS = """
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {api-key: sk-never-printed}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: a}
spec: {provider: openai, url: "http://a:8000/v1", apiKeySecretRef: {name: creds, key: api-key}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec: {model: chat, backends: [{name: a}]}
"""

# file name → content; every document here is foreign (11 in all, one of them inside a List).
FOREIGN_FILES = {
    "configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
    "namespace.yml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml}\n",
    "kustomization.yaml": (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [routeway.yaml]\n"
    ),
    "flux/sync.yaml": """
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: models, namespace: flux-system}
spec: {interval: 10m, prune: true, sourceRef: {kind: GitRepository, name: repo}, path: ./models}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: routeway, namespace: flux-system}
spec: {interval: 10m, chart: {spec: {chart: ./charts/routeway, sourceRef: {kind: GitRepository, name: repo}}}}
""",
    "argocd/app.yaml": (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: models, namespace: argocd}\n"
        "spec: {project: default, source: {repoURL: 'https://example.com/r', path: m}, destination: {namespace: ml}}\n"
    ),
    "values.yaml": "image:\n  repository: registry.example.com/routeway\nreplicas: 2\n",
    "patches/weights.yaml": "- op: replace\n  path: /spec/backends/0/weight\n  value: 90\n",
    "dashboard.json": '{"title": "Routeway", "panels": []}\n',
    "old-style/kustomization.yaml": "resources: [../routeway.yaml]\n",
    "list.yaml": """
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: in-a-list}}
  - {apiVersion: routeway.dev/v1alpha1, kind: ModelBackend, metadata: {name: b}, spec: {provider: mock}}
""",
    "health.lua": "hs = {}\nhs.status = 'Healthy'\nreturn hs\n",  # not read at all: not YAML
    "NOTES.txt": "kind: ConfigMap\n",  # not read at all either
}

EXPECTED_SKIPPED = {
    "Application (argoproj.io/v1alpha1)": 1,
    "ConfigMap (v1)": 2,
    "HelmRelease (helm.toolkit.fluxcd.io/v2)": 1,
    "Kustomization (kustomize.config.k8s.io/v1beta1)": 1,
    "Kustomization (kustomize.toolkit.fluxcd.io/v1)": 1,
    "Namespace (v1)": 1,
    NOT_AN_OBJECT: 4,  # values.yaml, the JSON patch list, dashboard.json, old-style kustomization
}


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ROUTEWAY, *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "sk-never-printed" not in proc.stderr + proc.stdout
    return proc


def gitops_folder(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A folder as a GitOps repository holds it: Routeway's objects among everything else."""
    for name, text in {"routeway.yaml": ROUTEWAY_OBJECTS, **FOREIGN_FILES, **(extra or {})}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_foreign_documents_fail_without_the_flag_and_are_skipped_with_it(tmp_path: Path) -> None:
    folder = str(gitops_folder(tmp_path))

    plain = cli("validate", "-f", folder)
    assert plain.returncode == 1
    lines = plain.stdout.splitlines()
    assert len(lines) == sum(EXPECTED_SKIPPED.values())
    assert (
        f"{tmp_path / 'configmap.yaml'}: ConfigMap/settings: kind: unsupported kind 'ConfigMap'"
        in plain.stdout
    )
    assert f"{tmp_path / 'patches' / 'weights.yaml'}: document 1: expected a mapping, got list" in lines
    assert "11 document(s) are not Routeway's; --skip-foreign leaves such documents out" in plain.stderr

    skipping = cli("validate", "--skip-foreign", "-f", folder)
    assert (skipping.returncode, skipping.stdout) == (0, "")
    summary = ", ".join(f"{n} {what}" for what, n in sorted(EXPECTED_SKIPPED.items()))
    assert f"skipped 11 document(s) that are not Routeway's: {summary}\n" in skipping.stderr
    # the Secret, the backend, the route and the backend inside the List; 11 of the 13 files
    # were read (health.lua and NOTES.txt are not YAML by their names)
    assert "valid: 4 object(s) in 11 file(s)" in skipping.stderr


def test_secrets_are_still_read_with_the_flag(tmp_path: Path) -> None:
    folder = str(gitops_folder(tmp_path))
    proc = cli("render", "--skip-foreign", "-f", folder, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    backends = {b["name"]: b for b in json.loads(proc.stdout)["backends"]}
    assert backends["a"]["credentialRef"] == "default/creds/api-key"
    assert "skipped 11 document(s) that are not Routeway's" in proc.stderr

    loaded = load_local([folder], skip_foreign=True)
    assert loaded.problems == () and not loaded.blocking
    assert list(loaded.credentials.values()) == ["sk-never-printed"]


def test_routeway_documents_are_never_skipped(tmp_path: Path) -> None:
    """Typos in what is meant for Routeway are not foreign objects: all still reported."""
    broken = """
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: broken}
spec: {model: broken, backends: [{name: a, weight: lots}]}
---
apiVersion: routeway.io/v1alpha1
kind: ModelBackend
metadata: {name: wrong-group}
spec: {provider: mock}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRout
metadata: {name: typo}
---
apiVersion: v1
kind: Secret
metadata: {name: bad}
data: {k: "!!!"}
---
apiVersion: routeway.dev/v1alpha1
metadata: {name: no-kind}
"""
    folder = gitops_folder(tmp_path, {"broken.yaml": broken})
    path = folder / "broken.yaml"
    proc = cli("validate", "--skip-foreign", "-f", str(folder))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    expected = [
        f"{path}: ModelRoute/broken: spec.backends[0].weight: Input should be a valid integer",
        f"{path}#2: ModelBackend/wrong-group: apiVersion: expected routeway.dev/v1alpha1 for ModelBackend, got 'routeway.io/v1alpha1'",
        f"{path}#3: ModelRout/typo: kind: unsupported kind 'ModelRout' (apiVersion 'routeway.dev/v1alpha1'); "
        "expected ModelBackend, ModelRoute, ModelGateway, ModelClient (routeway.dev/v1alpha1) or Secret (v1)",
        f"{path}#4: Secret/bad: data.k: not valid base64 (use stringData for plain text)",
        f"{path}#5: document 5: kind: unsupported kind None (apiVersion 'routeway.dev/v1alpha1'); "
        "expected ModelBackend, ModelRoute, ModelGateway, ModelClient (routeway.dev/v1alpha1) or Secret (v1)",
    ]
    assert len(lines) == len(expected), proc.stdout
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), line
    assert "skipped 11 document(s)" in proc.stderr and "5 problem(s) found" in proc.stderr


def test_a_foreign_file_that_does_not_parse_is_still_a_problem(tmp_path: Path) -> None:
    folder = gitops_folder(tmp_path, {"flux/broken.yaml": "apiVersion: v1\nkind: ConfigMap\ndata: {a: [b\n"})
    proc = cli("validate", "--skip-foreign", "-f", str(folder))
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        f"{folder / 'flux' / 'broken.yaml'}: file: malformed YAML (line 4, column 1)"
    )
    assert len(proc.stdout.splitlines()) == 1


def test_stdin_and_an_empty_skip(tmp_path: Path) -> None:
    proc = cli("validate", "--skip-foreign", "-f", "-", stdin=ROUTEWAY_OBJECTS)
    assert proc.returncode == 0
    assert "skipped 0 document(s) that are not Routeway's\n" in proc.stderr
    proc = cli("validate", "--skip-foreign", "-f", "-", stdin=FOREIGN_FILES["flux/sync.yaml"])
    assert proc.returncode == 0  # nothing of Routeway's at all is valid, as an empty folder is
    assert "skipped 2 document(s)" in proc.stderr and "valid: 0 object(s)" in proc.stderr


def test_loader_counts_and_default_is_unchanged(tmp_path: Path) -> None:
    folder = str(gitops_folder(tmp_path))
    skipping = load_manifests([folder], skip_foreign=True)
    assert skipping.skipped == EXPECTED_SKIPPED
    assert skipping.foreign == 11 and skipping.problems == ()
    plain = load_manifests([folder])
    assert plain.skipped == {} and plain.foreign == 11
    assert len(plain.problems) == 11
    assert sorted(o.name for o in plain.objects) == sorted(o.name for o in skipping.objects)


def test_serve_takes_the_same_flag(tmp_path: Path) -> None:
    folder = str(gitops_folder(tmp_path))
    args = build_parser().parse_args(["serve", "-f", folder, "--skip-foreign"])
    assert args.skip_foreign is True
    assert build_parser().parse_args(["serve", "-f", folder]).skip_foreign is False

    served = LocalManifestSource((folder,), skip_foreign=True).load()
    assert isinstance(served, LocalLoad)
    assert served.config is not None and not served.blocking and served.problems == ()
    rejected = LocalManifestSource((folder,)).load()
    assert isinstance(rejected, LocalLoad) and rejected.blocking
