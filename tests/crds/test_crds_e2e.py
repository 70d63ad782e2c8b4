"""The agreement table against a real API server (only with ROUTEWAY_E2E_KUBECONFIG).

The offline tests trust crds_apiserver to behave like kube-apiserver. This module checks that
trust where a cluster (kind, k3d, ...) is available, with what only a real server does:
- the CRDs from crds/ are accepted by the server (structural schema, CEL type checking and
  cost estimation) and become Established;
- every row of test_crds_agreement is created with `kubectl create --dry-run=server
  --validate=strict` and gets the row's verdict for the API server (`server_accepts`: the
  rows of a documented gap are accepted);
- for valid rows, the object the server would store (pruned and defaulted) has the same
  spec as the offline emulation stores.
The CRDs are applied for real (server-side apply), objects are never persisted (dry run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from crds_apiserver import admit
from test_crds_agreement import CASES

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("ROUTEWAY_E2E_KUBECONFIG", "")
NAMESPACE = "routeway-e2e-crds"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="needs a real cluster: set ROUTEWAY_E2E_KUBECONFIG"),
]


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl") or str(ROOT / "tools" / "bin" / "kubectl")
    return subprocess.run(
        [binary, "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def install_crds() -> None:
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    names = [
        f"crd/{p.name.split('_', 1)[1].removesuffix('.yaml')}.routeway.dev"
        for p in (ROOT / "crds").glob("*.yaml")
    ]
    established = kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    assert established.returncode == 0, established.stderr
    namespace = kubectl("create", "namespace", NAMESPACE)
    assert namespace.returncode == 0 or "AlreadyExists" in namespace.stderr, namespace.stderr


def test_agreement_table_on_a_real_api_server(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    """One test, so that a run without a cluster reports one skip; failures list every row."""
    install_crds()
    mismatches: list[str] = []
    for case in CASES:
        manifest = case.manifest()
        manifest["metadata"]["namespace"] = NAMESPACE
        created = kubectl(
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "json",
            "-f",
            "-",
            stdin=json.dumps(manifest),
        )
        if (created.returncode == 0) != case.server_accepts:
            verdict = "accepts" if created.returncode == 0 else f"rejects ({created.stderr.strip()})"
            mismatches.append(
                f"{case.id}: the API server {verdict}; the table says it "
                + ("accepts" if case.server_accepts else "rejects")
            )
        elif case.valid:
            stored = json.loads(created.stdout)["spec"]
            emulated = admit(crds_by_kind[case.kind], manifest).stored["spec"]
            if stored != emulated:
                mismatches.append(f"{case.id}: stored spec {stored} != emulated {emulated}")
    assert mismatches == []
