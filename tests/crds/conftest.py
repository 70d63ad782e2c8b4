"""Fixtures shared by the CRD tests: the generated CRDs, by kind."""

from __future__ import annotations

from typing import Any

import pytest

from routeway.crdgen import build_all


@pytest.fixture(scope="session")
def crds_by_kind() -> dict[str, dict[str, Any]]:
    """Freshly generated CRDs (not the files: those are compared in test_crds_generated)."""
    return {crd["spec"]["names"]["kind"]: crd for crd in build_all().values()}
