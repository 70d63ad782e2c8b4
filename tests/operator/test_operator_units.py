"""Pure parts of the operator: settings, builders, reconciler timing, apply.

Matrix: env parsing and CLI overrides / every built object (names, labels, owner refs,
RBAC restricted to own objects, security defaults) / the debounce coalescing and retry
backoff of the reconciler (ordered by events, not clocks) / create-or-patch (404→create,
409→patch, hash-equal→no write, not-owned→PermanentError, removed data keys deleted).
Status rules (condition merging, the kstatus trio) are tested in tests/core/test_core_status.py.
"""

from __future__ import annotations

import argparse
import asyncio

import kopf
import pytest
from kmock_ext import RoutewayEmulator
from routeway_operator import builders
from routeway_operator.apply import HASH_ANNOTATION, Applier, content_hash, drifted, merge_patch
from routeway_operator.commands import register, settings_from_args
from routeway_operator.kube import ApiError, KubeApi
from routeway_operator.reconciler import Reconciler
from routeway_operator.settings import OperatorSettings, SettingsError

from routeway.resources import ModelGateway

GW = ModelGateway.model_validate(
    {
        "metadata": {"name": "gw", "namespace": "ml", "uid": "uid-1"},
        "spec": {"replicas": 3, "workers": 2, "resources": {"limits": {"memory": "512Mi"}}},
    }
)


# ------------------------------------------------------------------ settings and CLI


def test_settings_from_env() -> None:
    s = OperatorSettings.from_env(
        {
            "ROUTEWAY_NAMESPACES": "b, a,,a",
            "ROUTEWAY_PROXY_IMAGE": "img:1",
            "ROUTEWAY_LOG_LEVEL": "debug",
            "ROUTEWAY_RESYNC_INTERVAL": "30",
            "ROUTEWAY_PEERING_NAME": "p",
            "POD_NAMESPACE": "ops",
            "ROUTEWAY_LIVENESS_PORT": "9000",
            "ROUTEWAY_USAGE_INTERVAL": "10",
        }
    )
    assert s.namespaces == ("a", "b") and not s.clusterwide
    assert (s.proxy_image, s.log_level, s.resync_interval) == ("img:1", "DEBUG", 30.0)
    assert (s.peering_name, s.pod_namespace, s.liveness_port) == ("p", "ops", 9000)
    assert s.usage_interval == 10.0 and OperatorSettings.from_env({}).usage_interval == 30.0
    assert OperatorSettings.from_env({}).clusterwide


@pytest.mark.parametrize(
    "env",
    [
        {"ROUTEWAY_RESYNC_INTERVAL": "soon"},
        {"ROUTEWAY_USAGE_INTERVAL": "0"},
        {"ROUTEWAY_LIVENESS_PORT": "99999"},
        {"ROUTEWAY_LOG_LEVEL": "loud"},
    ],
)
def test_bad_settings_are_reported(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        OperatorSettings.from_env(env)


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEWAY_NAMESPACES", "a")
    monkeypatch.setenv("ROUTEWAY_PROXY_IMAGE", "env:1")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["operator", "--namespace", "x,y", "-n", "z", "--proxy-image", "cli:2"])
    s = settings_from_args(args)
    assert s.namespaces == ("x", "y", "z") and s.proxy_image == "cli:2"
    assert settings_from_args(parser.parse_args(["operator", "--all-namespaces"])).clusterwide
    s = settings_from_args(parser.parse_args(["operator", "--no-liveness", "--standalone"]))
    assert not s.liveness_enabled and s.standalone
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "-n", "a", "--all-namespaces"])


# ------------------------------------------------------------------ builders


def test_every_child_is_owned_labelled_and_namespaced() -> None:
    objs = [
        *builders.build_workload(GW, OperatorSettings()),
        builders.build_config_map(GW, "rev", {"config.json": "{}"}),
        builders.build_secret(GW, {}),
    ]
    for obj in objs:
        meta = obj["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"][0]["uid"] == "uid-1"
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "routeway"
    assert [o["kind"] for o in objs[:6]] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "Deployment",
    ]


def test_role_reads_only_own_config_objects() -> None:
    rules = builders.build_role(GW)["rules"]
    assert all(set(r["verbs"]) == {"get", "list", "watch"} for r in rules)
    assert rules[0]["resources"] == ["configmaps"]
    assert rules[0]["resourceNames"][0] == "routeway-gw-config"
    assert all(n.startswith("routeway-gw-config") for n in rules[0]["resourceNames"])
    assert rules[1] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["routeway-gw-credentials"],
        "verbs": ["get", "list", "watch"],
    }


def test_deployment_runs_the_proxy_in_cluster_mode_securely() -> None:
    dep = builders.build_deployment(GW, OperatorSettings(proxy_image="img:9"))
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "img:9"
    assert container["args"][-2:] == ["--workers", "2"]
    assert "--access-log" not in container["args"]  # off unless the gateway asks for it
    logged = GW.model_copy(update={"spec": GW.spec.model_copy(update={"access_log": True})})
    [container] = builders.build_deployment(logged, OperatorSettings())["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"][-1] == "--access-log"
    assert ModelGateway.model_validate(
        {**GW.model_dump(by_alias=True), "spec": {"accessLog": True}}
    ).spec.access_log
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"] == {"limits": {"memory": "512Mi"}}
    assert dep["spec"]["replicas"] == 3
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= pod.get("metadata", dep["spec"]["template"]["metadata"])["labels"].items()
    )
    assert pod["serviceAccountName"] == "routeway-gw"


def test_long_names_are_shortened_without_collisions() -> None:
    a = builders.ChildNames.of("a" * 60 + "x")
    b = builders.ChildNames.of("a" * 60 + "y")
    assert a.workload != b.workload and len(a.secret) <= 63 and len(a.workload) <= 63


def test_secret_holds_values_by_store_key() -> None:
    secret = builders.build_secret(GW, {"ml/openai/token": "sk-1"})
    assert secret["data"] == {"ml_openai_token": "c2stMQ=="}


# ------------------------------------------------------------------ reconciler


async def test_bursts_coalesce_and_failures_back_off() -> None:
    runs: list[str] = []
    fail = {"flaky": 2}
    started = asyncio.Event()
    release = asyncio.Event()

    async def reconcile(key: object) -> None:
        runs.append(str(key))
        if fail.get(str(key), 0) > 0:
            fail[str(key)] -= 1
            raise kopf.TemporaryError("not yet", delay=0.01)
        if str(key) == "gw" and runs.count("gw") == 1:
            started.set()
            await release.wait()

    rec = Reconciler(reconcile, debounce=0.05, workers=2)
    task = asyncio.create_task(rec.run())
    for _ in range(10):
        rec.mark("gw")  # a burst before the debounce passed: one run
    await started.wait()
    rec.mark("gw")  # while it runs: exactly one more run afterwards
    rec.mark("gw")
    rec.mark("flaky")
    release.set()
    await rec.wait_idle()
    task.cancel()
    assert runs.count("gw") == 2
    assert runs.count("flaky") == 3  # two temporary failures, retried, then success
    assert rec.runs == 5


def test_backoff_doubles_per_failure_up_to_a_cap() -> None:
    async def nothing(key: object) -> None:
        return None

    rec = Reconciler(nothing, debounce=0.1, workers=1)
    delays = [rec._backoff("k", 1.0) for _ in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == 60.0


# ------------------------------------------------------------------ apply


def cm(data: dict[str, str], uid: str = "uid-1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "namespace": "default",
            "ownerReferences": [{"kind": "ModelGateway", "name": "gw", "uid": uid, "controller": True}],
        },
        "data": data,
    }


async def test_create_or_patch_writes_only_on_change(kmock: RoutewayEmulator) -> None:
    api = await KubeApi.connect(server=str(kmock.url))
    try:
        applier = Applier(api)
        assert await applier.apply(cm({"a": "1", "b": "2"}))
        assert not await applier.apply(cm({"a": "1", "b": "2"}))  # known hash: not even a GET
        assert not await Applier(api).apply(cm({"a": "1", "b": "2"}))  # restart: GET, equal hash
        assert await applier.apply(cm({"a": "1"}))
        stored = kmock.objects["v1/configmaps", "default", "c"]
        assert dict(stored["data"]) == {"a": "1"}
        assert stored["metadata"]["annotations"][HASH_ANNOTATION] == content_hash(cm({"a": "1"}))
        with pytest.raises(kopf.PermanentError):
            await Applier(api).apply(cm({"a": "2"}, uid="someone-else"))
        # Deleted behind our back: the cache is forgotten by the watch; a 404 on patch creates.
        await kmock.delete("/api/v1/namespaces/default/configmaps/c")
        applier.forget("/api/v1/namespaces/default/configmaps/c")
        assert await applier.apply(cm({"a": "3"}))
    finally:
        await api.close()
    writes = [(r.method, r.url.path.rsplit("/", 1)[-1]) for r in kmock.writes()]
    assert writes == [("POST", "configmaps"), ("PATCH", "c"), ("DELETE", "c"), ("POST", "configmaps")]


async def test_create_conflict_turns_into_patch(kmock: RoutewayEmulator) -> None:
    api = await KubeApi.connect(server=str(kmock.url))
    try:
        first, second = Applier(api), Applier(api)
        results = await asyncio.gather(first.apply(cm({"a": "1"})), second.apply(cm({"a": "1"})))
        assert sorted(results) == [False, True]
    finally:
        await api.close()


def test_merge_patch_deletes_removed_keys_and_error_mapping() -> None:
    patch = merge_patch({"data": {"a": "1", "b": "2"}, "binaryData": {"x": "y"}}, {"data": {"a": "1"}})
    assert patch["data"] == {"b": None, "a": "1"} and patch["binaryData"] is None
    assert isinstance(ApiError(503, "Unavailable", "").to_kopf("x"), kopf.TemporaryError)
    assert isinstance(ApiError(409, "Conflict", "").to_kopf("x"), kopf.TemporaryError)
    assert isinstance(ApiError(422, "Invalid", "").to_kopf("x"), kopf.PermanentError)
    assert isinstance(ApiError(403, "Forbidden", "").to_kopf("x"), kopf.PermanentError)


def test_built_objects_validate_against_kubernetes_schemas() -> None:
    import kubernetes_validate

    from routeway.configstore import encode_config

    encoded = encode_config(b"x" * 5000, "rev", "routeway-gw-config", budget=1000)
    objs = [
        *builders.build_workload(GW, OperatorSettings()),
        builders.build_config_map(GW, "rev", encoded.data),
        *(builders.build_shard(GW, "rev", name, binary) for name, binary in encoded.shards),
        builders.build_secret(GW, {"ml/openai/token": "sk-1"}),
    ]
    for obj in objs:
        for version in ("1.28.0", "1.33.0"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_drift_by_content_allows_server_defaults_but_not_a_narrowed_selector() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    served = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "resourceVersion": "7"},
        "spec": {
            "selector": {"app": "a"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            "clusterIP": "10.0.0.1",
            "sessionAffinity": "None",
        },
    }
    assert not drifted(served, desired, None)
    narrowed = {**served, "spec": {**served["spec"], "selector": {"app": "a", "extra": "x"}}}
    assert drifted(narrowed, desired, None)
    more_ports = {**served, "spec": {**served["spec"], "ports": [*served["spec"]["ports"], {"port": 81}]}}
    assert drifted(more_ports, desired, None)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {},
        "rules": [{"verbs": ["get"]}],
    }
    assert not drifted({**role, "metadata": {"resourceVersion": "1"}}, role, None)
    assert drifted({**role, "rules": [{"verbs": ["get", "list"]}]}, role, None)
