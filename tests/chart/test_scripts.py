"""scripts/fetch-tools and scripts/sync-chart-crds, run for real on copies of the repo layout.

fetch-tools: when tools/bin already holds working binaries it needs nothing else (not even npm);
without them and without npm it fails with a message saying so. sync-chart-crds: copies new and
changed CRDs (Routeway's and kopf's peering CRDs alike), removes copies whose source is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .conftest import ROOT, find_tool


def minimal_path(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named tools, so a test proves what a script does not need."""
    folder = tmp_path / "path"
    folder.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    return str(folder)


def copy_script(root: Path, name: str) -> Path:
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    script = root / "scripts" / name
    shutil.copy2(ROOT / "scripts" / name, script)
    return script


def test_fetch_tools_is_a_no_op_when_tools_exist(tmp_path: Path, helm_binary: Path) -> None:
    root = tmp_path / "repo"
    script = copy_script(root, "fetch-tools")
    (root / "tools" / "bin").mkdir(parents=True)
    (root / "tools" / "bin" / "helm").symlink_to(helm_binary)
    kubectl = find_tool("kubectl")
    assert kubectl is not None, "scripts/fetch-tools provides kubectl next to helm"
    (root / "tools" / "bin" / "kubectl").symlink_to(kubectl)
    env = {"PATH": minimal_path(tmp_path, "bash", "dirname"), "HOME": str(tmp_path)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_fetch_tools_without_npm_says_so(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    script = copy_script(root, "fetch-tools")
    env = {"PATH": minimal_path(tmp_path, "bash", "dirname"), "HOME": str(tmp_path)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "npm is required" in result.stderr
    assert not (root / "tools" / "bin" / "helm").exists()


def test_sync_chart_crds(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    script = copy_script(root, "sync-chart-crds")
    source, copies = root / "crds", root / "charts" / "routeway" / "crds"
    source.mkdir(parents=True)
    copies.mkdir(parents=True)
    (source / "routeway.dev_a.yaml").write_text("a: new\n")
    (source / "routeway.dev_b.yaml").write_text("b: 1\n")
    (copies / "routeway.dev_a.yaml").write_text("a: old\n")
    (copies / "routeway.dev_gone.yaml").write_text("gone: 1\n")
    (source / "kopf.dev_peerings.yaml").write_text("kopf: 2\n")
    (copies / "kopf.dev_peerings.yaml").write_text("kopf: 1\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_text() for p in copies.iterdir()} == {
        "routeway.dev_a.yaml": "a: new\n",
        "routeway.dev_b.yaml": "b: 1\n",
        "kopf.dev_peerings.yaml": "kopf: 2\n",
    }
    again = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (again.returncode, again.stdout) == (0, "")


def test_sync_chart_crds_refuses_an_empty_source(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    script = copy_script(root, "sync-chart-crds")
    (root / "crds").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "generate the CRDs first" in result.stderr
