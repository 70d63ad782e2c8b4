"""The operator end to end, in process, against the kmock emulator.

Matrix: first reconcile (children, contents, owner references, statuses, events) / weight
update (new revision; Ready and observedGeneration in one write) / invalid route and missing
backend next to a good route / Secret rotation / gateway deletion (cleanup, routes report
GatewayNotFound) / restart and resync with nothing changed (zero writes) / a burst of route
changes (coalesced renders) / Deployment readiness (gateway Ready) / a config that can no
longer be stored (last good ConfigMap stays) / only affected gateways reconciled /
cluster-wide mode / transient API errors retried / permanent ones reported (and spec never
written) / edits by others healed (kubectl scale/edit of children, deletion).
"""

from __future__ import annotations

import base64
import hashlib
import json

from kmock_ext import RoutewayEmulator
from operator_factories import (
    backend,
    condition,
    config_of,
    create,
    delete,
    gateway,
    get,
    is_true,
    patch,
    route,
    secret,
    seed,
)
from rig import GATEWAYS, ROUTES, eventually, objects_of, running_operator, settled

from routeway.proxyconfig import credential_store_key
from routeway.translate import ObjectKey

CHILDREN = (
    ("apps/v1/deployments", "routeway-gw"),
    ("v1/services", "routeway-gw"),
    ("v1/serviceaccounts", "routeway-gw"),
    ("rbac.authorization.k8s.io/v1/roles", "routeway-gw"),
    ("rbac.authorization.k8s.io/v1/rolebindings", "routeway-gw"),
    ("policy/v1/poddisruptionbudgets", "routeway-gw"),
    ("v1/configmaps", "routeway-gw-config"),
    ("v1/secrets", "routeway-gw-credentials"),
)


def world() -> list[dict]:
    return [
        secret("openai", token="sk-test-123"),
        gateway("gw"),
        backend("llama-v1"),
        backend("llama-v2", url="http://vllm:8000/v1", apiKeySecretRef={"name": "openai", "key": "token"}),
        route("chat", "llama", {"llama-v1": 90, "llama-v2": 10}),
    ]


def route_ready(kmock: RoutewayEmulator, name: str, generation: int) -> bool:
    obj = get(kmock, ROUTES, name)
    cond = condition(obj, "Ready")
    return bool(cond and cond["status"] == "True" and cond["observedGeneration"] == generation)


async def test_gateway_gets_children_config_credentials_and_status(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1), what="route Ready")
        await settled(kmock, state)

    gw = get(kmock, GATEWAYS, "gw")
    for resource, name in CHILDREN:
        child = get(kmock, resource, name)
        assert child is not None, (resource, name)
        refs = child["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "routeway.dev/v1alpha1",
                "kind": "ModelGateway",
                "name": "gw",
                "uid": gw["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]

    cm = get(kmock, "v1/configmaps", "routeway-gw-config")
    config = config_of(kmock)
    assert cm["metadata"]["annotations"]["routeway.dev/config-revision"] == config["revision"]
    [chat] = config["routes"]
    assert [(t["backend"], t["weight"]) for t in chat["targets"]] == [
        ("default/llama-v1", 90),
        ("default/llama-v2", 10),
    ]
    assert "sk-test-123" not in json.dumps(cm)  # credentials never in a ConfigMap

    creds = get(kmock, "v1/secrets", "routeway-gw-credentials")
    key = credential_store_key("default/openai/token")
    assert base64.b64decode(creds["data"][key]).decode() == "sk-test-123"

    deployment = get(kmock, "apps/v1/deployments", "routeway-gw")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:7] == [
        "proxy",
        "--configmap",
        "routeway-gw-config",
        "--secret",
        "routeway-gw-credentials",
        "--namespace",
        "default",
    ]
    assert deployment["spec"]["replicas"] == 2

    chat_status = get(kmock, ROUTES, "chat")["status"]
    assert chat_status["backendWeights"] == "llama-v1=90,llama-v2=10"
    assert chat_status["gateway"] == "default/gw"
    assert chat_status["configRevision"] == config["revision"]
    assert chat_status["observedGeneration"] == 1
    assert [c["type"] for c in chat_status["conditions"]] == [
        "Accepted",
        "ResolvedRefs",
        "Programmed",
        "Ready",
        "Reconciling",
        "Stalled",
    ]
    assert all(isinstance(c["observedGeneration"], int) for c in chat_status["conditions"])

    gw_status = gw["status"]
    assert gw_status["configRevision"] == config["revision"]
    assert gw_status["routes"] == 1
    assert gw_status["address"] == "http://routeway-gw.default.svc/v1"
    assert is_true(gw, "Programmed") and not is_true(gw, "Ready")  # no proxy pod is ready yet
    assert condition(gw, "Reconciling")["reason"] == "ProxiesNotReady"

    v2 = get(kmock, "routeway.dev/v1alpha1/modelbackends", "llama-v2")
    assert v2["status"]["routes"] == 1 and is_true(v2, "Ready")

    events = objects_of(kmock, "v1/events")
    assert [e["reason"] for e in events.values()] == ["ConfigApplied"]


async def test_weight_update_renders_new_revision_and_flips_ready_with_generation(
    kmock: RoutewayEmulator,
) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        first = config_of(kmock)["revision"]
        await patch(
            kmock,
            "ModelRoute",
            "chat",
            {"spec": {"backends": [{"name": "llama-v1", "weight": 50}, {"name": "llama-v2", "weight": 50}]}},
        )
        await eventually(lambda: route_ready(kmock, "chat", 2), what="generation 2 Ready")
        await settled(kmock, state)

    config = config_of(kmock)
    assert config["revision"] != first
    assert [t["weight"] for t in config["routes"][0]["targets"]] == [50, 50]
    assert get(kmock, ROUTES, "chat")["status"]["backendWeights"] == "llama-v1=50,llama-v2=50"
    # kubectl wait: no version of the object ever says Ready=True for generation 2 while
    # observedGeneration still says 1, or the reverse.
    for version in kmock.objects[ROUTES, "default", "chat"].history:
        status = (version or {}).get("status") or {}
        for cond in status.get("conditions") or []:
            assert cond["observedGeneration"] == status["observedGeneration"]


async def test_invalid_route_and_missing_backend_do_not_stop_others(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        await create(
            kmock,
            route("broken", "other", {"llama-v1": 1}, retries={"attempts": 99}),  # attempts > 10
            route("orphan", "orphan-model", {"nowhere": 1}),
            route("second", "second-model", {"llama-v2": 1}),
            route("dupe", "llama", {"llama-v2": 1}),  # the model "chat" already serves
        )
        await eventually(lambda: route_ready(kmock, "second", 1), what="second Ready")
        await eventually(lambda: condition(get(kmock, ROUTES, "dupe"), "Accepted"))
        await eventually(lambda: condition(get(kmock, ROUTES, "broken"), "Accepted"))
        await eventually(lambda: condition(get(kmock, ROUTES, "orphan"), "ResolvedRefs"))
        await settled(kmock, state)

    broken = get(kmock, ROUTES, "broken")
    accepted = condition(broken, "Accepted")
    assert accepted["status"] == "False" and accepted["reason"] == "Invalid"
    assert "retries.attempts" in accepted["message"]
    assert condition(broken, "Stalled")["status"] == "True"
    orphan = get(kmock, ROUTES, "orphan")
    resolved = condition(orphan, "ResolvedRefs")
    assert resolved["status"] == "False" and resolved["reason"] == "BackendNotFound"
    assert "nowhere" in resolved["message"]
    assert not is_true(orphan, "Ready")

    dupe = condition(get(kmock, ROUTES, "dupe"), "Accepted")
    assert dupe["status"] == "False" and dupe["reason"] == "ModelNameConflict"
    assert route_ready(kmock, "chat", 1)  # the older route keeps the model
    models = sorted(r["model"] for r in config_of(kmock)["routes"])
    assert models == ["llama", "orphan-model", "second-model"]  # orphan renders with no targets
    reasons = sorted(e["reason"] for e in objects_of(kmock, "v1/events").values())
    assert "Invalid" in reasons and "BackendNotFound" in reasons


async def test_secret_rotation_updates_credentials_only(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        revision = config_of(kmock)["revision"]
        resp = await kmock.patch(
            "/api/v1/namespaces/default/secrets/openai",
            json={"data": {"token": base64.b64encode(b"sk-rotated").decode()}},
        )
        assert resp.status == 200
        key = credential_store_key("default/openai/token")

        def rotated() -> bool:
            data = get(kmock, "v1/secrets", "routeway-gw-credentials")["data"]
            return base64.b64decode(data[key]) == b"sk-rotated"

        await eventually(rotated, what="credentials rotated")
        await settled(kmock, state)
    assert config_of(kmock)["revision"] == revision


async def test_deleting_the_gateway_cleans_up_and_detaches_routes(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        await delete(kmock, "ModelGateway", "gw")

        def detached() -> bool:
            cond = condition(get(kmock, ROUTES, "chat"), "Accepted")
            return bool(cond and cond["reason"] == "GatewayNotFound")

        await eventually(detached, what="route reports GatewayNotFound")
        await settled(kmock, state)
    for resource, name in CHILDREN:
        assert get(kmock, resource, name) is None, (resource, name)
    status = get(kmock, ROUTES, "chat")["status"]
    assert status.get("gateway") is None and status.get("configRevision") is None
    assert condition(get(kmock, ROUTES, "chat"), "Programmed")["reason"] == "NotAttached"


async def test_restart_and_resync_write_nothing(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world(), route("second", "second-model", {"llama-v2": 1}))
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "second", 1))
        await settled(kmock, state)
    writes = len(kmock.writes())
    assert writes > 0

    # Restarted with a short resync interval: kopf's timer makes the operator forget what it
    # knows and re-read every child, several times. Still no write.
    async with running_operator(kmock, resync_interval=0.2) as state:
        gw = ObjectKey("ModelGateway", "default", "gw")
        await eventually(lambda: state.reconciler.runs_by_key[gw] >= 4, what="several resyncs")
        await state.reconciler.wait_idle()
    assert len(kmock.writes()) == writes, [(r.method, r.url.path) for r in kmock.writes()[writes:]]


async def test_a_burst_of_route_changes_coalesces(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock, debounce=0.3) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        await settled(kmock, state)
        before = len([r for r in kmock.writes() if r.url.path.endswith("/configmaps/routeway-gw-config")])
        await create(kmock, *(route(f"r{i}", f"model-{i}", {"llama-v1": 1}) for i in range(20)))
        await eventually(
            lambda: all(route_ready(kmock, f"r{i}", 1) for i in range(20)), what="20 routes Ready"
        )
        await settled(kmock, state)
    config_writes = [r for r in kmock.writes() if r.url.path.endswith("/configmaps/routeway-gw-config")]
    assert len(config_writes) - before <= 3  # 20 changes, a handful of renders
    assert len(config_of(kmock)["routes"]) == 21


async def test_ready_proxies_make_the_gateway_ready(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        dep = get(kmock, "apps/v1/deployments", "routeway-gw")
        resp = await kmock.patch(
            "/apis/apps/v1/namespaces/default/deployments/routeway-gw/status",
            json={
                "status": {
                    "replicas": 2,
                    "readyReplicas": 2,
                    "observedGeneration": dep["metadata"]["generation"],
                }
            },
        )
        assert resp.status == 200
        await eventually(lambda: is_true(get(kmock, GATEWAYS, "gw"), "Ready"), what="gateway Ready")
        await settled(kmock, state)
    status = get(kmock, GATEWAYS, "gw")["status"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2


async def test_unstorable_config_keeps_the_last_good_configmap(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock, configmap_budget=100, debounce=0.3) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        manifest = get(kmock, "v1/configmaps", "routeway-gw-config")
        assert "manifest.json" in manifest["data"]  # tiny budget: sharded even for one route
        good = manifest["metadata"]["annotations"]["routeway.dev/config-revision"]
        # Incompressible model names: too many shards even after gzip.
        names = ["".join(hashlib.sha256(f"{i}{s}".encode()).hexdigest() for s in "abc") for i in range(6)]
        await create(kmock, *(route(f"big{i}", name, {"llama-v1": 1}) for i, name in enumerate(names)))

        def stalled() -> bool:
            cond = condition(get(kmock, GATEWAYS, "gw"), "Programmed")
            return bool(cond and cond["reason"] == "RenderFailed")

        await eventually(stalled, what="gateway reports RenderFailed")
        await settled(kmock, state)
    cm = get(kmock, "v1/configmaps", "routeway-gw-config")
    assert cm["metadata"]["annotations"]["routeway.dev/config-revision"] == good
    assert condition(get(kmock, GATEWAYS, "gw"), "Stalled")["status"] == "True"
    assert get(kmock, ROUTES, "chat")["status"]["configRevision"] == good


async def test_a_change_reconciles_only_the_gateways_it_affects(kmock: RoutewayEmulator) -> None:
    seed(
        kmock,
        *world(),
        gateway("other"),
        backend("solo"),
        route("elsewhere", "elsewhere", {"solo": 1}, gw="other"),
    )
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1) and route_ready(kmock, "elsewhere", 1))
        await settled(kmock, state)
        runs = dict(state.reconciler.runs_by_key)
        writes = len(kmock.writes())
        await patch(kmock, "ModelRoute", "chat", {"spec": {"backends": [{"name": "llama-v1", "weight": 1}]}})
        await eventually(lambda: route_ready(kmock, "chat", 2))
        await settled(kmock, state)
        other = ObjectKey("ModelGateway", "default", "other")
        mine = ObjectKey("ModelGateway", "default", "gw")
        assert state.reconciler.runs_by_key[other] == runs[other]
        assert state.reconciler.runs_by_key[mine] > runs[mine]
    touched = {r.url.path for r in kmock.writes()[writes:]}
    assert not any("routeway-other" in p or p.endswith("/elsewhere/status") for p in touched), touched


async def test_cluster_wide_mode_serves_every_namespace(kmock: RoutewayEmulator) -> None:
    kmock.seed("v1/namespaces", None, {"metadata": {"name": "team-a"}})
    seed(kmock, gateway("gw", allowedRoutes={"namespaces": {"from": "All"}}), backend("llama-v1"))
    seed(kmock, backend("llama-v1"), namespace="team-a")
    cross = route("team-route", "team-model", {"llama-v1": 1})
    cross["spec"]["gatewayRef"] = {"name": "gw", "namespace": "default"}
    seed(kmock, cross, namespace="team-a")
    async with running_operator(kmock, namespaces=()) as state:

        def served() -> bool:
            cm = get(kmock, "v1/configmaps", "routeway-gw-config")
            return bool(cm) and "team-a/team-route" in cm["data"]["config.json"]

        await eventually(served, what="a route of another namespace is served")
        await settled(kmock, state)
    team = get(kmock, ROUTES, "team-route", namespace="team-a")
    assert team["status"]["gateway"] == "default/gw" and is_true(team, "Ready")


async def test_transient_api_errors_are_retried(kmock: RoutewayEmulator) -> None:
    kmock.inject_failure("POST", "/configmaps", 503, times=1)
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1), what="Ready after retries")
        await settled(kmock, state)
    posts = [r for r in kmock._requests if r.method == "POST" and r.url.path.endswith("/configmaps")]
    assert len(posts) == 2  # a refusal, then the retry that worked


async def test_permanent_errors_are_reported_on_the_gateway(kmock: RoutewayEmulator) -> None:
    kmock.seed(
        "v1/configmaps", "default", {"metadata": {"name": "routeway-gw-config"}, "data": {"mine": "yes"}}
    )
    seed(kmock, *world())
    async with running_operator(kmock) as state:

        def failed() -> bool:
            cond = condition(get(kmock, GATEWAYS, "gw"), "Programmed")
            return bool(cond and cond["reason"] == "ApplyFailed")

        await eventually(failed, what="ApplyFailed on the gateway")
        await settled(kmock, state)
    gw = get(kmock, GATEWAYS, "gw")
    assert "not owned by this gateway" in condition(gw, "Programmed")["message"]
    assert condition(gw, "Stalled")["status"] == "True"
    assert dict(get(kmock, "v1/configmaps", "routeway-gw-config")["data"]) == {"mine": "yes"}  # untouched
    assert "ApplyFailed" in [e["reason"] for e in objects_of(kmock, "v1/events").values()]
    # The operator never writes spec: custom resources get /status, and metadata only
    # (kopf's finalizer for the resync timer) on the main resource.
    for r in kmock.writes():
        if "/routeway.dev/" in r.url.path and not r.url.path.endswith("/status"):
            ops = r.data if isinstance(r.data, list) else [{"path": f"/{k}"} for k in r.data]
            assert all(op["path"].startswith("/metadata") for op in ops), r.data


async def test_edits_by_others_are_healed(kmock: RoutewayEmulator) -> None:
    seed(kmock, *world())
    async with running_operator(kmock) as state:
        await eventually(lambda: route_ready(kmock, "chat", 1))
        await settled(kmock, state)
        good = get(kmock, "v1/configmaps", "routeway-gw-config")["data"]["config.json"]
        # kubectl edit/scale keep the operator's hash annotation; the content still heals.
        resp = await kmock.patch(
            "/apis/apps/v1/namespaces/default/deployments/routeway-gw", json={"spec": {"replicas": 5}}
        )
        assert resp.status == 200
        resp = await kmock.patch(
            "/api/v1/namespaces/default/configmaps/routeway-gw-config", json={"data": {"config.json": "{}"}}
        )
        assert resp.status == 200
        await eventually(lambda: get(kmock, "apps/v1/deployments", "routeway-gw")["spec"]["replicas"] == 2)
        await eventually(
            lambda: get(kmock, "v1/configmaps", "routeway-gw-config")["data"]["config.json"] == good
        )
        await kmock.delete("/api/v1/namespaces/default/services/routeway-gw")
        await eventually(lambda: get(kmock, "v1/services", "routeway-gw"), what="Service re-created")
        await settled(kmock, state)
        # kinds without a spec generation: a hand edit that keeps the annotation heals too
        rules = get(kmock, "rbac.authorization.k8s.io/v1/roles", "routeway-gw")["rules"]
        resp = await kmock.patch(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/routeway-gw",
            json={"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]},
        )
        assert resp.status == 200
        ports = get(kmock, "v1/services", "routeway-gw")["spec"]["ports"]
        resp = await kmock.patch(
            "/api/v1/namespaces/default/services/routeway-gw",
            json={"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}},
        )
        assert resp.status == 200
        await eventually(
            lambda: get(kmock, "rbac.authorization.k8s.io/v1/roles", "routeway-gw")["rules"] == rules,
            what="Role rules restored",
        )
        await eventually(
            lambda: get(kmock, "v1/services", "routeway-gw")["spec"]["ports"] == ports,
            what="Service ports restored",
        )
        await settled(kmock, state)
