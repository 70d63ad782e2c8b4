"""What the operator fault tests share: a misbehaving kmock, a world of objects, and the state
the operator reaches in that world without faults, to compare a faulted run against.

"Converged" is judged by comparison, not by a list of expectations: the same world is run
once without faults in a fresh emulator, and every child object and every status of the
faulted run must equal that reference once server-filled values (uids, resourceVersions,
timestamps) are set aside. A lost status, a missing child or a child patched once too often
(its generation moves) all show as a difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import kmock as kmock_lib
import kopf
import yaml
from kmock._internal import enums
from kmock_faults import FaultyEmulator
from operator_factories import backend, client, condition, gateway, route, secret, seed
from rig import GATEWAYS, ROUTES, WAIT, eventually, running_operator
from routeway_operator.builders import MANAGED_BY
from routeway_operator.state import OperatorState

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
CLIENTS = "routeway.dev/v1alpha1/modelclients"
BACKENDS = "routeway.dev/v1alpha1/modelbackends"
CHILD_RESOURCES = (
    "apps/v1/deployments",
    "v1/services",
    "v1/serviceaccounts",
    "rbac.authorization.k8s.io/v1/roles",
    "rbac.authorization.k8s.io/v1/rolebindings",
    "policy/v1/poddisruptionbudgets",
    "v1/configmaps",
    "v1/secrets",
    "apps/v1/controllerrevisions",
)
CUSTOM_RESOURCES = (GATEWAYS, ROUTES, BACKENDS, CLIENTS)
DERIVED = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "routeway.dev/content-hash")
"""Filled by the server, or (the content hash) a digest of what is compared anyway, owner uid included."""
REVISION = re.compile(r"config revision [0-9a-f]+")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def fast_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's own retries and reconnects, shortened so a test spends no seconds in backoff;
    what is retried is kopf's unchanged behaviour. A watch delivering nothing for 1 s is
    reconnected (production: kopf's 70 s, with the API server's bookmarks keeping it alive)."""
    settings.networking.error_backoffs = [0.1, 0.2, 0.3]
    settings.watching.reconnect_backoff = 0.05
    settings.watching.inactivity_timeout = 1.0


async def settle(kmock: FaultyEmulator, state: OperatorState, quiet: float = 0.3) -> None:
    """Until the reconciler is idle and kmock saw no request other than a watch for `quiet`
    seconds (watches reconnect every second here: see `fast_kopf`)."""

    def busy() -> int:
        return sum(1 for r in kmock._requests if r.action != enums.action.WATCH)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        await state.reconciler.wait_idle()
        before = busy()
        await asyncio.sleep(quiet)
        if state.reconciler.pending == 0 and busy() == before:
            return
    raise AssertionError("the operator did not settle")


def world() -> list[dict[str, Any]]:
    """One gateway with two routes (one with an upstream key), two backends and a client."""
    return [
        secret("upstream", token="sk-upstream-123"),
        secret("caller", **{"api-key": "rw-caller-key-456"}),
        gateway("gw"),
        backend("llama-v1"),
        backend("llama-v2", url="http://vllm:8000/v1", apiKeySecretRef={"name": "upstream", "key": "token"}),
        route("chat", "llama", {"llama-v1": 90, "llama-v2": 10}),
        route("second", "second-model", {"llama-v2": 1}),
        client("team", "caller"),
    ]


def _load_crds() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(CRD_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]


def _force_close_session(url: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=True))


@contextlib.asynccontextmanager
async def faulty_emulator() -> AsyncIterator[FaultyEmulator]:
    """A served FaultyEmulator with the built-in kinds, Routeway's CRDs and `default`."""
    emulator = FaultyEmulator()
    emulator.add_builtins()
    for crd in _load_crds():
        emulator.add_crd(crd)
    emulator.seed("v1/namespaces", None, {"metadata": {"name": "default"}})
    async with emulator, kmock_lib.Server(emulator, client_fct=_force_close_session):
        try:
            yield emulator
        finally:
            emulator.release_all()


def _normalise(value: Any, owners: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in DERIVED or (isinstance(item, str) and TIMESTAMP.fullmatch(item)):
                continue
            if key == "uid" and item in owners:
                out[key] = owners[item]
            else:
                out[key] = _normalise(item, owners)
        return out
    if isinstance(value, list):
        return [_normalise(item, owners) for item in value]
    return value


def snapshot(kmock: FaultyEmulator) -> dict[str, Any]:
    """Every child object whole, and every custom resource's status and finalizers, with
    server-filled values and timestamps set aside (owner uids become the owner's name)."""
    objects = [(res, name, obj.raw) for (res, _ns, name), obj in kmock.objects.items() if not obj.deleted]
    owners = {raw["metadata"]["uid"]: f"{raw.get('kind')}/{name}" for _res, name, raw in objects}
    children = {kmock.resource(r): r for r in CHILD_RESOURCES}
    custom = {kmock.resource(r): r for r in CUSTOM_RESOURCES}
    out: dict[str, Any] = {}
    for res, name, raw in objects:
        if res in children:
            labels = raw["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY:
                out[f"{children[res]}/{name}"] = _normalise(raw, owners)
        elif res in custom:
            out[f"{custom[res]}/{name}"] = _normalise(
                {"status": raw.get("status"), "finalizers": raw["metadata"].get("finalizers")}, owners
            )
    return out


def statuses_complete(kmock: FaultyEmulator) -> bool:
    """Every custom resource has a Ready condition for its current generation."""
    custom = {kmock.resource(r) for r in CUSTOM_RESOURCES}
    for (res, _ns, _name), obj in kmock.objects.items():
        if obj.deleted or res not in custom:
            continue
        ready = condition(obj.raw, "Ready")
        if ready is None or ready.get("observedGeneration") != obj.raw["metadata"].get("generation"):
            return False
    return True


async def converge(kmock: FaultyEmulator, state: OperatorState, what: str = "converged") -> None:
    await eventually(lambda: statuses_complete(kmock), what=what)
    # kopf's first listing is over and checked: a re-list from now on is one
    await eventually(lambda: state.relist is not None and not state.relist.initial, what="first audits")
    await settle(kmock, state)


async def reference(
    objects: Sequence[dict[str, Any]],
    change: Callable[[FaultyEmulator], Any] | None = None,
    **overrides: Any,
) -> tuple[dict[str, Any], int]:
    """The state a fault-free operator (with settings `overrides`) reaches for `objects`
    (then `change`, if given), and how many writes other than Events it made to get there."""
    async with faulty_emulator() as kmock:
        seed(kmock, *objects)
        async with running_operator(kmock, kopf_settings=fast_kopf, **overrides) as state:
            await converge(kmock, state, "reference converged")
            if change is not None:
                await change(kmock)
                await converge(kmock, state, "reference converged after the change")
        expected = snapshot(kmock)
        assert "apps/v1/deployments/routeway-gw" in expected, "the snapshot must select children"
        return expected, len(writes_but_events(kmock))


def writes_but_events(kmock: FaultyEmulator, since: int = 0) -> list[tuple[str, str]]:
    """Writes other than Events (which are advisory, posted at least once per transition)."""
    return [(m, p) for m, p in kmock.writes_since(since) if "/events" not in p]


def differences(have: Any, want: Any, path: str = "") -> list[str]:
    """Where two snapshots differ, as readable paths (an assertion message that says what)."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want)):
            if key not in want:
                out.append(f"{path}/{key}: unexpected {have[key]!r:.200}")
            elif key not in have:
                out.append(f"{path}/{key}: missing, want {want[key]!r:.200}")
            else:
                out.extend(differences(have[key], want[key], f"{path}/{key}"))
        return out
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        return [
            d
            for i, (h, w) in enumerate(zip(have, want, strict=True))
            for d in differences(h, w, f"{path}[{i}]")
        ]
    return [] if have == want else [f"{path}: {have!r:.300} != {want!r:.300}"]


def first_revisions_masked(snap: dict[str, Any]) -> dict[str, Any]:
    """`snap` without the revision each route and client names: the revision that first
    served a generation stays in its status (routeway.status), so where the operator applied
    an intermediate config (as after a re-list, before the deletions missed are known) those
    differ from a run that saw every change at once. The gateway's revision still counts."""
    out = copy.deepcopy(snap)
    for name, obj in out.items():
        if "/modelroutes/" in name or "/modelclients/" in name:
            status = obj.get("status") or {}
            if status.get("configRevision"):
                status["configRevision"] = "<revision>"
            for cond in status.get("conditions") or []:
                cond["message"] = REVISION.sub("config revision <revision>", cond.get("message", ""))
    return out


async def reaches(
    kmock: FaultyEmulator, expected: dict[str, Any], what: str, *, mask_first_revisions: bool = False
) -> None:
    """Wait until the snapshot equals `expected`; if it never does, fail with the differences."""
    mask = first_revisions_masked if mask_first_revisions else (lambda snap: snap)
    expected = mask(expected)
    with contextlib.suppress(AssertionError):
        await eventually(lambda: not differences(mask(snapshot(kmock)), expected), what=what)
    diff = differences(mask(snapshot(kmock)), expected)
    assert not diff, f"{what}, but: " + "\n".join(diff)
