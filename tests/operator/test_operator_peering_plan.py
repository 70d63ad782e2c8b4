"""How `routeway operator` picks its peering before kopf starts (routeway_operator/peering.py).

Matrix: the pure rule over mode (off / auto / required) x what the API said (object found,
missing in one of two namespaces, CRDs not served, unreadable, unreachable), cluster-wide and
namespaced; then `run_operator` against kmock: auto without the object runs standalone and
reconciles, auto with the object peers through it, required without the object exits 1 at
once with a message naming the object and how to create it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kmock_ext import RoutewayEmulator
from operator_factories import backend, gateway, get, route, seed
from rig import WAIT, eventually
from routeway_operator.commands import run_operator
from routeway_operator.kube import KubeApi
from routeway_operator.peering import PeeringFound, decide_peering, probe_peering
from routeway_operator.settings import OperatorSettings, PeeringMode

TWO = OperatorSettings(namespaces=("a", "b"), peering_name="rw")
CLUSTER = OperatorSettings(namespaces=(), peering_name="rw")


@pytest.mark.parametrize(
    ("settings", "found", "name", "fatal", "says"),
    [
        # off: never asks, never peers
        (replace(TWO, peering=PeeringMode.OFF), None, None, False, "--standalone"),
        # auto
        (TWO, PeeringFound(True), "rw", False, "KopfPeering 'rw' in namespace(s) a, b"),
        (TWO, PeeringFound(True, ("b",)), None, False, "running standalone"),
        (TWO, PeeringFound(False), None, False, "CRDs (kopf.dev) are not installed"),
        (TWO, PeeringFound(False, problem="403 Forbidden", status=403), None, False, "403 Forbidden"),
        (CLUSTER, PeeringFound(True), "rw", False, "ClusterKopfPeering 'rw'"),
        (CLUSTER, PeeringFound(True, ("cluster-wide",)), None, False, "kind: ClusterKopfPeering"),
        # required
        (replace(TWO, peering=PeeringMode.REQUIRED), PeeringFound(True), "rw", False, "peering through"),
        (
            replace(TWO, peering=PeeringMode.REQUIRED),
            PeeringFound(True, ("b",)),
            "rw",
            True,
            "KopfPeering 'rw' not found in namespace(s) b",
        ),
        (replace(TWO, peering=PeeringMode.REQUIRED), PeeringFound(False), "rw", True, "kubectl apply"),
        # no API at all, or one that keeps failing: fatal in either mode (kopf would only retry
        # in silence; standalone could mean two active replicas)
        (TWO, PeeringFound(False, problem="refused", reachable=False), None, True, "cannot be reached"),
        (TWO, PeeringFound(False, problem="503 Unavailable", status=503), None, True, "keeps failing"),
        (
            replace(TWO, peering=PeeringMode.REQUIRED),
            PeeringFound(False, problem="429 Too Many", status=429),
            None,
            True,
            "keeps failing",
        ),
    ],
)
def test_decide_peering(
    settings: OperatorSettings, found: PeeringFound | None, name: str | None, fatal: bool, says: str
) -> None:
    plan = decide_peering(settings, found)
    assert (plan.peering_name, plan.fatal) == (name, fatal)
    assert says in plan.message


def test_the_fix_names_every_missing_object() -> None:
    plan = decide_peering(replace(TWO, peering=PeeringMode.REQUIRED), PeeringFound(True, ("a", "b")))
    assert "kind: KopfPeering, metadata: {name: rw, namespace: a}" in plan.message
    assert "kind: KopfPeering, metadata: {name: rw, namespace: b}" in plan.message
    assert "crds/kopf.dev_peerings.yaml" in plan.message


async def test_probe_reads_what_the_api_holds(kmock: RoutewayEmulator) -> None:
    api = await KubeApi.connect(server=str(kmock.url))
    try:
        settings = OperatorSettings(namespaces=("default", "other"), peering_name="routeway")
        assert await probe_peering(api, settings) == PeeringFound(True, ("default", "other"))
        seed_peering(kmock, "default")
        assert await probe_peering(api, settings) == PeeringFound(True, ("other",))
        cluster = OperatorSettings(namespaces=(), peering_name="routeway")
        assert await probe_peering(api, cluster) == PeeringFound(True, ("cluster-wide",))
    finally:
        await api.close()


def seed_peering(kmock: RoutewayEmulator, namespace: str) -> None:
    kmock.seed(
        "kopf.dev/v1/kopfpeerings",
        namespace,
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "routeway"}},
    )


@pytest.fixture
def kubeconfig(kmock: RoutewayEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`routeway operator` as a developer runs it: credentials from KUBECONFIG."""
    from kubernetes_asyncio.config import kube_config

    path = tmp_path / "kubeconfig"
    cluster = {"server": str(kmock.url).rstrip("/")}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": cluster}],
                "users": [{"name": "dev", "user": {"token": "t"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "dev"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setenv("KUBECONFIG", str(path))


SETTINGS = OperatorSettings(namespaces=("default",), liveness_enabled=False, debounce=0.05, peering_wait=0.3)


async def run_until_configmap(kmock: RoutewayEmulator, settings: OperatorSettings) -> None:
    seed(kmock, gateway("gw"), backend("m"), route("chat", "chat", {"m": 1}))
    stop = asyncio.Event()
    task = asyncio.create_task(run_operator(settings, stop_flag=stop))
    try:
        await eventually(lambda: get(kmock, "v1/configmaps", "routeway-gw-config"), what="ConfigMap")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, WAIT) == 0


@pytest.mark.usefixtures("kubeconfig")
async def test_auto_without_a_peering_object_runs_standalone_and_says_so(
    kmock: RoutewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="routeway.operator"):
        await run_until_configmap(kmock, SETTINGS)
    (line,) = [r for r in caplog.records if r.name == "routeway.operator" and "peering" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "running standalone" in line.getMessage()
    assert "KopfPeering 'routeway' not found in namespace(s) default" in line.getMessage()


@pytest.mark.usefixtures("kubeconfig")
async def test_auto_with_a_peering_object_peers_through_it(
    kmock: RoutewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    seed_peering(kmock, "default")
    with caplog.at_level(logging.INFO, logger="routeway.operator"):
        await run_until_configmap(kmock, SETTINGS)
    assert "peering through KopfPeering 'routeway'" in caplog.text
    # kopf keeps its liveness record in the peering object's status: it really peers.
    path = "/apis/kopf.dev/v1/namespaces/default/kopfpeerings/routeway"
    assert any(r.method == "PATCH" and r.url.path == path for r in kmock.writes())


@pytest.mark.usefixtures("kubeconfig")
async def test_required_peering_missing_fails_at_once_with_the_fix(
    kmock: RoutewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = OperatorSettings.from_env({"ROUTEWAY_NAMESPACES": "default", "ROUTEWAY_PEERING_NAME": "rw"})
    assert settings.peering is PeeringMode.REQUIRED
    settings = replace(settings, liveness_enabled=False, peering_wait=0.3)
    with caplog.at_level(logging.INFO, logger="routeway.operator"):
        code = await asyncio.wait_for(run_operator(settings), WAIT)
    assert code == 1
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "peering 'rw' is required" in line.getMessage()
    assert "kind: KopfPeering, metadata: {name: rw, namespace: default}" in line.getMessage()


@pytest.mark.usefixtures("kubeconfig")
async def test_required_peering_created_moments_later_is_waited_for(
    kmock: RoutewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Helm creates the chart's KopfPeering after the operator's Deployment: a pod that starts
    first looks again (saying so) instead of exiting."""
    settings = replace(SETTINGS, peering=PeeringMode.REQUIRED, peering_wait=WAIT)

    async def create_it_later() -> None:
        await eventually(lambda: "peering not settled yet" in caplog.text, what="a first look")
        seed_peering(kmock, "default")

    with caplog.at_level(logging.INFO, logger="routeway.operator"):
        later = asyncio.create_task(create_it_later())
        await run_until_configmap(kmock, settings)
        await later
    assert "KopfPeering 'routeway' not found in namespace(s) default" in caplog.text
    assert "peering through KopfPeering 'routeway'" in caplog.text
