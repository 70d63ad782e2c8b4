"""Fixtures for the Helm chart tests: real `helm` binaries, isolated from $HOME.

`helm` comes from PATH or from tools/bin, where scripts/fetch-tools puts it (this conftest runs
that script once per session when it is missing). A missing helm fails the tests, in CI and
locally alike: a chart that is never rendered is a chart that is never tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "routeway"
TOOLS_BIN = ROOT / "tools" / "bin"
RELEASE = "rw"
RELEASE_NAMESPACE = "routeway-system"


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template --include-crds` produced, in order."""

    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


@dataclass(frozen=True)
class Helm:
    """Runs the real helm binary with its cache/config/data directories in a temp dir."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )


def find_tool(name: str) -> Path | None:
    """Prefer the pinned binary in tools/bin; fall back to whatever PATH offers."""
    pinned = TOOLS_BIN / name
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return pinned
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    binary = find_tool("helm")
    if binary is None:
        result = subprocess.run(
            [str(ROOT / "scripts" / "fetch-tools")], capture_output=True, text=True, timeout=300, check=False
        )
        binary = find_tool("helm")
        if binary is None:
            # Never a skip (in CI or not): the chart tests are the only check of the chart.
            pytest.fail(
                "helm not found on PATH or in tools/bin and scripts/fetch-tools could not fetch it "
                f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
    return binary


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECACHEDIR": str(home / "kube-cache"),
        # No cluster: make sure nothing reads a developer's kubeconfig either.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Helm(binary=helm_binary, env=env)


@pytest.fixture(scope="session")
def template(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Rendered]]:
    """`template(values)` renders the chart with those values (cached per value set)."""
    cache: dict[str, Rendered] = {}
    folder = tmp_path_factory.mktemp("values")

    def render(values: dict[str, Any] | None = None) -> Rendered:
        key = yaml.safe_dump(values or {}, sort_keys=True)
        if key not in cache:
            result = helm_template(helm, folder, values)
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
            cache[key] = Rendered(objects=objects)
        return cache[key]

    yield render


def helm_template(
    helm: Helm, folder: Path, values: dict[str, Any] | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Runs `helm template --include-crds` with the values written to a file (as users pass -f)."""
    args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--include-crds", *extra]
    if values is not None:
        path = folder / f"values-{abs(hash(yaml.safe_dump(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return helm.run(*args)
