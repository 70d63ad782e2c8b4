"""`ServeRollouts`, serve's in-memory rollout adapter, with a fake clock and real translation.

Matrix (what the process tests cannot pin down without timing): a ModelBackend edit keeps the
stable arm's credential when the new spec names another Secret, and no credential reaches the
/rollouts document; a route that leaves the files keeps its state (coming back is no free
pass to stable), and is not listed meanwhile; an unknown route is refused; samples are split
by route and pruned to the window with their baseline kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from routeway.local import LocalLoad, load_local
from routeway.rollout import ArmObservation, Report
from routeway.serve_rollouts import ServeRollouts, UnknownRoute

ROUTE = """\
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat, namespace: default}
spec:
  model: chat
  backends: [{name: up}]
  strategy:
    canary:
      steps: [{setWeight: 50}, {pause: {}}]
      analysis: {interval: 1s, window: 5s, minRequests: 1, metrics: [{name: errorRate, max: 0.1}]}
"""


def backend(secret: str, model: str) -> str:
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: up, namespace: default}}
spec:
  provider: openai
  url: http://127.0.0.1:9/v1
  model: {model}
  apiKeySecretRef: {{name: {secret}, key: k}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {secret}, namespace: default}}
stringData: {{k: sk-{secret}-value}}
"""


def read(tmp_path: Path, *documents: str) -> LocalLoad:
    path = tmp_path / "m.yaml"
    path.write_text("---\n".join(documents))
    loaded = load_local([str(path)])
    assert loaded.config is not None and not loaded.problems, loaded.problems
    return loaded


def load(rollouts: ServeRollouts, loaded: LocalLoad, now: float) -> None:
    assert loaded.config is not None
    specs = {f"{r.namespace}/{r.name}": r.spec.model_dump(by_alias=True, mode="json") for r in loaded.routes}
    problems = rollouts.load(
        loaded.config,
        specs,
        now,
        backends=loaded.backend_ids,
        credentials=loaded.credentials,
        lookup=loaded.lookup,
    )
    assert problems == []


def test_backend_edit_keeps_the_stable_arms_credential(tmp_path: Path) -> None:
    rollouts = ServeRollouts()
    load(rollouts, read(tmp_path, ROUTE, backend("old", "m1")), 0.0)
    load(rollouts, read(tmp_path, ROUTE, backend("new", "m2")), 1.0)
    served = rollouts.served()
    assert served is not None
    route = served.routes[0]
    assert route.canary is not None and route.canary.weight == 50.0
    assert [b.credential_ref for b in route.pinned_backends] == ["default/old/k"]
    assert rollouts.credentials == {"default/old/k": "sk-old-value", "default/new/k": "sk-new-value"}
    document = orjson.dumps(rollouts.documents()).decode()
    assert "sk-old-value" not in document and "sk-new-value" not in document

    rollouts.act("default/chat", "promote-full", 2.0)  # the old spec is no longer served
    assert rollouts.credentials == {"default/new/k": "sk-new-value"}


def test_a_route_that_leaves_the_files_keeps_its_state(tmp_path: Path) -> None:
    rollouts = ServeRollouts()
    load(rollouts, read(tmp_path, ROUTE, backend("s", "m1")), 0.0)
    first = rollouts.document("default/chat")["stableRevision"]
    other = ROUTE.replace("chat", "other")
    load(rollouts, read(tmp_path, other, backend("s", "m1")), 1.0)  # the route deleted
    assert [d["route"] for d in rollouts.documents()] == ["default/other"]
    with pytest.raises(UnknownRoute):
        rollouts.act("default/chat", "abort", 1.5)
    load(rollouts, read(tmp_path, ROUTE, backend("s", "m2")), 2.0)  # back, with a new backend spec
    back = rollouts.document("default/chat")
    assert back["phase"] == "Paused" and back["stableRevision"] == first  # a rollout, not a new stable


def _report(at: int, canary: str, stable: str, failures: int) -> Report:
    return Report(
        "group-1",
        0.0,
        {
            ("default/chat", stable): ArmObservation(success=10 * at),
            ("default/chat", canary): ArmObservation(success=10 * at, server_error=failures * at),
            ("default/other", "x"): ArmObservation(success=at),
        },
    )


def test_samples_are_split_by_route_and_pruned_to_the_window(tmp_path: Path) -> None:
    rollouts = ServeRollouts()
    load(rollouts, read(tmp_path, ROUTE, backend("s", "m1")), 0.0)
    load(rollouts, read(tmp_path, ROUTE, backend("s", "m2")), 0.5)
    doc: dict[str, Any] = rollouts.document("default/chat")
    canary, stable = doc["canaryRevision"], doc["stableRevision"]
    for second in range(1, 20):
        rollouts.observe(_report(second, canary, stable, failures=0), float(second))
        rollouts.tick(float(second))
    kept = rollouts._samples["default/chat"]
    assert all(set(s.report.arms) <= {("default/chat", canary), ("default/chat", stable)} for s in kept)
    assert [s.at for s in kept] == [
        13.0,
        14.0,
        15.0,
        16.0,
        17.0,
        18.0,
        19.0,
    ]  # the window (14-19) and the baseline before it
    assert rollouts.document("default/chat")["lastCheck"]["verdict"] == "pass"

    for second in range(20, 23):
        rollouts.observe(_report(second, canary, stable, failures=5), float(second))
        rollouts.tick(float(second))
    assert rollouts.document("default/chat")["phase"] == "RolledBack"


def test_undo_to_a_revision_with_an_earlier_credential_serves_it_with_that_credential(
    tmp_path: Path,
) -> None:
    """Undo brings back a revision whose backend spec named another Secret (still in the
    files): its arm must be served with that Secret's value, not without a credential (every
    attempt a 401 from the upstream, counted against the canary: a healthy revision rolled
    back)."""
    old_secret = backend("old", "m1").split("---\n", 1)[1]
    rollouts = ServeRollouts()
    load(rollouts, read(tmp_path, ROUTE, backend("old", "m1")), 0.0)
    first = rollouts.document("default/chat")["stableRevision"]
    load(rollouts, read(tmp_path, ROUTE, backend("new", "m2"), old_secret), 1.0)
    rollouts.act("default/chat", "promote-full", 2.0)
    assert rollouts.credentials == {"default/new/k": "sk-new-value"}

    result = rollouts.act("default/chat", "undo", 3.0, first)
    assert result.refused is None and result.document["canaryRevision"] == first
    served = rollouts.served()
    assert served is not None and served.routes[0].canary is not None
    assert [b.credential_ref for b in served.routes[0].canary.pinned_backends] == ["default/old/k"]
    assert rollouts.credentials.get("default/old/k") == "sk-old-value"
