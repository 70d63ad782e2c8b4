"""examples/gitops/: what the README's pre-merge check runs, and the examples' own correctness.

Matrix: the README's pre-merge check runs as written and passes; `routeway validate
--skip-foreign` passes on the whole folder (and needs the flag), the hosted backend's Secret
declared by the ExternalSecret (and reported missing without it, or with a misspelt key);
each kustomize folder builds with the real `kubectl kustomize`, and the build passes
`routeway validate`; the production overlay's patches apply (namespace, replicas, weights in
the rendered ProxyConfig); Flux and Argo CD objects match their projects' real CRD schemas
and the ExternalSecret matches External Secrets' (core_gitops_schemas.py; a misspelt field fails,
which guards the check itself); built-in
kinds pass kubernetes-validate; every document in the folder is covered by one of these
checks; the paths, dependencies and sync waves point at what exists; the chart accepts the
values the HelmRelease and the Application give it (`helm template` enforces
values.schema.json).

kubectl and helm come from tools/bin (scripts/fetch-tools) or PATH; when both lack them the
fixture runs scripts/fetch-tools once, and a tool that is still missing fails the test, in CI
and locally alike, as in tests/chart: an example that is never built is never tested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from core_gitops_schemas import validator

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
TOOLS_BIN = ROOT / "tools" / "bin"
ROUTEWAY = str(Path(sys.executable).parent / "routeway")
KUSTOMIZE_FOLDERS = ("base", "overlays/production")
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def find_tool(name: str) -> str | None:
    pinned = TOOLS_BIN / name
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    return shutil.which(name)


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    found = {name: find_tool(name) for name in ("kubectl", "helm")}
    if None in found.values():
        result = subprocess.run(
            [str(ROOT / "scripts" / "fetch-tools")], capture_output=True, text=True, timeout=300, check=False
        )
        found = {name: find_tool(name) for name in found}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            # Never a skip: the overlay build is the only check that the patches apply.
            pytest.fail(
                f"{', '.join(missing)} not found on PATH or in tools/bin and scripts/fetch-tools could "
                f"not fetch it (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
    return {name: path for name, path in found.items() if path}


@pytest.fixture(scope="module")
def tool_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No cluster and no developer configuration: kubectl and helm stay out of $HOME."""
    home = tmp_path_factory.mktemp("tools-home")
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "KUBECONFIG": str(home / "no-kubeconfig"),
        "KUBECACHEDIR": str(home / "kube-cache"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }


def run(
    args: list[str], env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def routeway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = run([ROUTEWAY, *args], stdin=stdin)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def kustomize(tools: dict[str, str], env: dict[str, str], folder: str) -> str:
    built = run([tools["kubectl"], "kustomize", str(GITOPS / folder)], env=env)
    assert built.returncode == 0, built.stderr
    return built.stdout


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(GITOPS.rglob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    matches = [
        doc for _, doc in documents() if doc["kind"] == kind and doc.get("metadata", {}).get("name") == name
    ]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_validate_passes_on_the_whole_folder_with_the_flag() -> None:
    proc = routeway("validate", "--skip-foreign", "-f", str(GITOPS))
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    assert "valid: 8 object(s) in 13 file(s)" in proc.stderr
    assert (
        "skipped 9 document(s) that are not Routeway's: 2 Application (argoproj.io/v1alpha1), "
        "1 GitRepository (source.toolkit.fluxcd.io/v1), 1 HelmRelease (helm.toolkit.fluxcd.io/v2), "
        "2 Kustomization (kustomize.config.k8s.io/v1beta1), 2 Kustomization (kustomize.toolkit.fluxcd.io/v1), "
        "1 Namespace (v1)"
    ) in proc.stderr
    assert (
        "1 Secret(s) made in the cluster from other documents: "
        "default/openai-api-key (ExternalSecret/openai-api-key, key api-key)"
    ) in proc.stderr
    plain = routeway("validate", "-f", str(GITOPS))
    # 10 foreign documents, then the backend whose Secret only the ExternalSecret declares, and its route
    assert plain.returncode == 1 and len(plain.stdout.splitlines()) == 12
    assert "ModelBackend/openai: spec.apiKeySecretRef: SecretNotFound" in plain.stdout


def test_the_external_secret_is_what_resolves_the_hosted_backend(tmp_path: Path) -> None:
    """Without it the backend's Secret is missing; a key it does not make is still reported."""
    copy = tmp_path / "gitops"
    shutil.copytree(GITOPS, copy)
    secrets = copy / "base" / "secrets.yaml"
    declared = secrets.read_text()
    secrets.unlink()
    proc = routeway("validate", "--skip-foreign", "-f", str(copy))
    assert proc.returncode == 1
    assert "ModelBackend/openai: spec.apiKeySecretRef: SecretNotFound" in proc.stdout
    assert routeway("validate", "--skip-foreign", "--assume-secrets", "-f", str(copy)).returncode == 0

    secrets.write_text(declared.replace("secretKey: api-key", "secretKey: apikey"))
    proc = routeway("validate", "--skip-foreign", "-f", str(copy))
    assert proc.returncode == 1
    assert "SecretKeyNotFound: Secret 'openai-api-key' has no key 'api-key'" in proc.stdout


def test_the_readmes_pre_merge_check_passes_as_written(
    tools: dict[str, str], tool_env: dict[str, str]
) -> None:
    readme = (GITOPS / "README.md").read_text()
    section = readme.split("## Pre-merge check", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "routeway validate --skip-foreign -f examples/gitops" in script
    path = os.pathsep.join([str(Path(ROUTEWAY).parent), str(Path(tools["kubectl"]).parent), tool_env["PATH"]])
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**tool_env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("valid: 8 object(s)") == 2  # the folder, then the one overlay


@pytest.mark.parametrize("folder", KUSTOMIZE_FOLDERS)
def test_each_kustomization_builds_and_its_output_validates(
    tools: dict[str, str], tool_env: dict[str, str], folder: str
) -> None:
    built = kustomize(tools, tool_env, folder)
    proc = routeway("validate", "--skip-foreign", "-f", "-", stdin=built)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    assert "valid: 8 object(s) in 1 file(s)" in proc.stderr


def test_the_production_overlay_patches_apply(tools: dict[str, str], tool_env: dict[str, str]) -> None:
    built = [doc for doc in yaml.safe_load_all(kustomize(tools, tool_env, "overlays/production")) if doc]
    routeway_objects = [doc for doc in built if doc["apiVersion"].startswith("routeway.dev/")]
    assert {doc["metadata"]["namespace"] for doc in routeway_objects} == {"ml"}
    (gateway,) = [doc for doc in built if doc["kind"] == "ModelGateway"]
    assert gateway["spec"]["replicas"] == 3
    assert one("ModelGateway", "default")["spec"]["replicas"] == 2  # the base is unchanged

    proc = routeway("render", "--skip-foreign", "-f", "-", "-o", "json", stdin=yaml.safe_dump_all(built))
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert (config["gateway"]["namespace"], config["gateway"]["name"]) == ("ml", "default")
    chat = next(route for route in config["routes"] if route["id"] == "ml/chat")
    assert [(t["backend"], t["weight"]) for t in chat["targets"]] == [
        ("ml/llama-v1", 90),
        ("ml/llama-v2", 10),
    ]
    # the hosted backend's Secret, made in `ml` by the ExternalSecret, is named, never its value
    hosted = next(backend for backend in config["backends"] if backend["id"] == "ml/openai")
    assert hosted["credentialRef"] == "ml/openai-api-key/api-key"
    assert "ml/openai-api-key (ExternalSecret/openai-api-key, key api-key)" in proc.stderr


def test_flux_and_argo_objects_match_their_real_schemas() -> None:
    checked = []
    for path, doc in documents():
        check = validator(doc["apiVersion"], doc["kind"])
        if check is None:
            continue
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(doc)]
        assert not errors, f"{path.relative_to(ROOT)}: {doc['kind']}: {errors}"
        checked.append(doc["kind"])
    assert sorted(checked) == [
        "Application",
        "Application",
        "ExternalSecret",
        "GitRepository",
        "HelmRelease",
        "Kustomization",
        "Kustomization",
    ]


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Kustomization", "routeway-models", ["spec", "wiat"], True),
        ("HelmRelease", "routeway", ["spec", "upgrade", "crds"], "Replace"),
        ("Application", "routeway-operator", ["spec", "source", "helm", "valueObject"], {}),
        ("GitRepository", "routeway", ["spec", "ref", "branhc"], "main"),
        ("ExternalSecret", "openai-api-key", ["spec", "target", "creationPolicy"], "Owned"),
        ("ExternalSecret", "openai-api-key", ["spec", "secretStoreRef", "nmae"], "vault"),
    ],
)
def test_schema_check_rejects_a_misspelt_field(kind: str, name: str, path: list[str], value: Any) -> None:
    """Guards the test above: the schemas must be strict, or it proves nothing."""
    doc = json.loads(json.dumps(one(kind, name)))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    check = validator(doc["apiVersion"], doc["kind"])
    assert check is not None and list(check.iter_errors(doc))


def test_builtin_kinds_pass_kubernetes_validate(tools: dict[str, str], tool_env: dict[str, str]) -> None:
    built = [doc for doc in yaml.safe_load_all(kustomize(tools, tool_env, "overlays/production")) if doc]
    on_disk = [doc for _, doc in documents()]
    builtin = [doc for doc in [*on_disk, *built] if "." not in doc["apiVersion"].split("/")[0]]
    assert sorted({doc["kind"] for doc in builtin}) == ["Namespace"]
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_document_is_checked_by_one_of_the_tests() -> None:
    """A new kind added to the examples must come with a check (or a line here)."""
    for path, doc in documents():
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        folder = path.parent.relative_to(GITOPS).as_posix()
        if group == "routeway.dev":
            continue  # routeway validate
        if group == "kustomize.config.k8s.io":
            assert folder in KUSTOMIZE_FOLDERS, f"{path}: a kustomization no test builds"
        elif validator(doc["apiVersion"], doc["kind"]) is None:
            assert "." not in group, f"{path}: no schema check for {doc['apiVersion']} {doc['kind']}"


def test_paths_dependencies_and_waves_point_at_what_exists() -> None:
    release = one("HelmRelease", "routeway")["spec"]
    assert (ROOT / release["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    assert release["chart"]["spec"]["sourceRef"]["name"] == "routeway"
    source = one("GitRepository", "routeway")["spec"]
    included = [line[2:].strip("/") for line in source["ignore"].splitlines() if line.startswith("!/")]

    operator, models = one("Kustomization", "routeway-operator"), one("Kustomization", "routeway-models")
    for ks in (operator, models):
        path = ks["spec"]["path"].removeprefix("./")
        assert (ROOT / path).is_dir() and path.split("/")[0] in included
        assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "routeway"}
        assert ks["spec"]["wait"] is True
    assert release["chart"]["spec"]["chart"].removeprefix("./").split("/")[0] in included
    # The HelmRelease is what routeway-operator applies, and routeway-models waits for it.
    operator_folder = ROOT / operator["spec"]["path"]
    assert [p.name for p in operator_folder.iterdir()] == ["helmrelease.yaml"]
    assert models["spec"]["dependsOn"] == [{"name": "routeway-operator"}]
    assert models["spec"]["path"] == "./examples/gitops/overlays/production"

    chart_app, models_app = one("Application", "routeway-operator"), one("Application", "routeway-models")
    assert (ROOT / chart_app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert (ROOT / models_app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    waves = [
        int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for app in (chart_app, models_app)
    ]
    assert waves[0] < waves[1]


@pytest.mark.parametrize(
    ("kind", "name"), [("HelmRelease", "routeway"), ("Application", "routeway-operator")]
)
def test_the_chart_accepts_the_values_given_to_it(
    tools: dict[str, str], tool_env: dict[str, str], tmp_path: Path, kind: str, name: str
) -> None:
    spec = one(kind, name)["spec"]
    values = spec["values"] if kind == "HelmRelease" else spec["source"]["helm"]["valuesObject"]
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = run(
        [
            tools["helm"],
            "template",
            "routeway",
            str(ROOT / "charts" / "routeway"),
            "--namespace",
            "routeway-system",
            "--values",
            str(values_file),
        ],
        env=tool_env,
    )
    assert rendered.returncode == 0, rendered.stderr
    images = {
        container["image"]
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/routeway:0.1.0"}
