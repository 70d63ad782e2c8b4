"""Fixtures for the operator tests: a stricter kmock with Routeway's CRDs and a default Namespace.

The `kmock` fixture here replaces kmock's plugin fixture of the same name, so every operator
test talks to `RoutewayEmulator` (see kmock_ext.py) rather than the bare kmock 0.8 emulator.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock as kmock_lib
import pytest
import yaml
from kmock_ext import RoutewayEmulator

from routeway.resources import CUSTOM_KINDS, GROUP, VERSION

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"

# kubernetes_asyncio reads KUBECONFIG lazily, kopf's default login eagerly: never let a
# developer's kubeconfig leak into a test.
os.environ["KUBECONFIG"] = os.devnull


def load_crds() -> list[dict[str, Any]]:
    """The generated CRDs from crds/*.yaml; minimal equivalents from the models until they exist."""
    crds = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    if crds:
        return crds
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{model.PLURAL}.{GROUP}"},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {
                    "kind": model.KIND,
                    "plural": model.PLURAL,
                    "singular": model.KIND.lower(),
                    "shortNames": list(model.SHORT_NAMES),
                },
                "versions": [
                    {"name": VERSION, "served": True, "storage": True, "subresources": {"status": {}}}
                ],
            },
        }
        for model in CUSTOM_KINDS
    ]


def _force_close_session(url: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=True))


@pytest.fixture()
async def kmock() -> AsyncIterator[RoutewayEmulator]:
    emulator = RoutewayEmulator()
    emulator.add_builtins()
    for crd in load_crds():
        emulator.add_crd(crd)
    emulator.seed("v1/namespaces", None, {"metadata": {"name": "default"}})
    async with emulator, kmock_server(emulator):
        yield emulator


def kmock_server(emulator: RoutewayEmulator) -> kmock_lib.Server:
    return kmock_lib.Server(emulator, client_fct=_force_close_session)
