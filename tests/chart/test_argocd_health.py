"""The Argo CD health checks in charts/routeway/argocd run for real, on sample objects.

Each kind has the layout of Argo CD's own resource_customizations: `health.lua`,
`health_test.yaml` (expected status and message per sample, message "" when left out) and
`testdata/*.yaml`. The scripts run in lupa's bundled Lua 5.1 (the language of gopher-lua, which
Argo CD embeds) and Lua 5.4, the way Argo CD runs an argocd-cm script: the object is the
global `obj` (a table built from the object's JSON), only the base and table libraries and a
safe `os` exist (no `string`, `math` or `io`; `resource.customizations.useOpenLibs` is off by
default), and the returned table must hold a valid status and a string message, or Argo CD
reports Unknown.

The snippets users apply (argocd-cm-health.yaml, argo-cd-values.yaml) must embed the scripts
verbatim, and the statuses the real operator code writes must map as kstatus says: Ready=True
Healthy, Reconciling=True Progressing, Stalled=True Degraded.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest
import yaml

from routeway import status as st
from routeway.status import ACCEPTED, RESOLVED_REFS, Condition, accepted, resolved

from .conftest import CHART, find_tool

ARGOCD = CHART / "argocd"
GROUP = "routeway.dev"
KINDS = ("ModelGateway", "ModelRoute", "ModelBackend", "ModelClient")
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}  # Missing/Unknown: Argo CD's own
COMMON = re.compile(r"^-- BEGIN routeway common.*?^-- END routeway common$", re.S | re.M)
RUNTIMES: dict[str, Any] = {"lua5.1": lupa.lua51, "lua5.4": lupa.lua54}

# What Argo CD leaves a script loaded from argocd-cm: base, table, package and an `os` with
# only time and date. Strings lose their methods along with the string library.
SANDBOX = """
local time, date = os.time, os.date
getmetatable("").__index = nil
string, math, io, debug, coroutine, utf8, bit32, python = nil, nil, nil, nil, nil, nil, nil, nil
os = { time = time, date = date }
"""
# Records which lines of the chunk named "@health.lua" run (installed before the sandbox).
TRACE = """
local getinfo, sethook, hits = debug.getinfo, debug.sethook, {}
sethook(function(_, line)
  if getinfo(2, "S").source == "@health.lua" then hits[line] = true end
end, "l")
return hits
"""


class JsonLoader(yaml.SafeLoader):
    """YAML as Argo CD reads it (via JSON): timestamps stay strings."""


JsonLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=JsonLoader)


def script(kind: str) -> str:
    return (ARGOCD / GROUP / kind / "health.lua").read_text()


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON-shaped value as gopher-lua's decodeValue builds it: maps and lists become tables
    (lists 1-based), null fields are absent."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            assert isinstance(key, str), key
            if item is not None:
                table[key] = to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(runtime, item)
        return table
    assert isinstance(value, str | bool | int | float), f"not JSON: {value!r}"
    return value


def run_health(
    source: str, obj: dict[str, Any], version: str = "lua5.1", lines: set[int] | None = None
) -> dict[str, str]:
    """Run a health script on `obj`; the result as Argo CD decodes it ({status, message}).
    `lines` collects the numbers of the script's lines that ran."""
    lua = RUNTIMES[version]
    runtime = lua.LuaRuntime(register_eval=False, register_builtins=False)
    hits = runtime.execute(TRACE) if lines is not None else None
    runtime.execute(SANDBOX)
    runtime.globals().obj = to_lua(runtime, obj)
    returned = runtime.execute(source, name="@health.lua")
    if hits is not None and lines is not None:
        lines.update(hits.keys())
    assert lua.lua_type(returned) == "table", f"the script returned {returned!r}, not a table"
    result = dict(returned.items())
    assert set(result) <= {"status", "message"}, f"unexpected keys {sorted(result)}"
    assert isinstance(result.get("status"), str), result
    assert isinstance(result.get("message", ""), str), result  # a number fails Argo CD's JSON decoding
    assert result["status"] in HEALTH_STATUSES, result
    return {"status": result["status"], "message": result.get("message", "")}


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    input_path: str
    status: str
    message: str

    @property
    def id(self) -> str:
        return f"{self.kind}/{Path(self.input_path).stem}"


def cases(kind: str) -> list[Case]:
    tests = load(ARGOCD / GROUP / kind / "health_test.yaml")["tests"]
    return [
        Case(kind, t["inputPath"], t["healthStatus"]["status"], t["healthStatus"].get("message", ""))
        for t in tests
    ]


ALL_CASES = [case for kind in KINDS for case in cases(kind)]


@pytest.mark.parametrize("version", sorted(RUNTIMES))
@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_health_of_sample(case: Case, version: str) -> None:
    obj = load(ARGOCD / GROUP / case.kind / case.input_path)
    assert (obj["apiVersion"], obj["kind"]) == (f"{GROUP}/v1alpha1", case.kind)
    got = run_health(script(case.kind), obj, version)
    assert got == {"status": case.status, "message": case.message}


@pytest.mark.parametrize("kind", KINDS)
def test_layout_and_coverage(kind: str) -> None:
    folder = ARGOCD / GROUP / kind
    listed = [c.input_path for c in cases(kind)]
    on_disk = sorted(str(p.relative_to(folder)) for p in (folder / "testdata").glob("*.yaml"))
    assert sorted(listed) == on_disk, "every sample is listed once in health_test.yaml, and exists"
    assert len(listed) == len(set(listed))
    assert len(listed) >= 4
    statuses = {c.status for c in cases(kind)}
    assert statuses >= {"Healthy", "Progressing", "Degraded"}
    if kind == "ModelRoute":
        assert "Suspended" in statuses  # a paused rollout
    for case in cases(kind):  # the file name says the expected status, as in Argo CD's tests
        assert Path(case.input_path).name.startswith(case.status.lower() + "_") or (
            Path(case.input_path).stem == case.status.lower()
        ), case


def test_scripts_share_one_common_block() -> None:
    blocks = {kind: COMMON.findall(script(kind)) for kind in KINDS}
    assert all(len(found) == 1 for found in blocks.values()), {k: len(v) for k, v in blocks.items()}
    assert len({found[0] for found in blocks.values()}) == 1, "the common block differs between kinds"


def test_scripts_use_no_standard_library_beyond_base() -> None:
    """A script that calls string.*, math.* or a string method fails in Argo CD unless
    useOpenLibs is set; the sandbox catches calls that run, this catches the rest."""
    for kind in KINDS:
        code = "\n".join(line.partition("--")[0] for line in script(kind).splitlines())
        assert not re.search(r"\b(string|math|io|debug|coroutine|utf8)\s*\.", code), kind
        assert not re.search(r"[\w)\]\"']:\w+\s*\(", code), f"{kind}: a method call on a value"


def test_samples_reach_every_outcome() -> None:
    """Every `return health(...)` runs for some sample: each branch has its sample. The common
    block counts once (its rollout branches are reached through ModelRoute samples)."""
    reached: set[tuple[str, int]] = set()
    wanted: set[tuple[str, int]] = set()
    for kind in KINDS:
        source = script(kind)
        block = COMMON.search(source)
        assert block is not None
        first, last = (source.count("\n", 0, block.start()) + 1, source.count("\n", 0, block.end()) + 1)

        def key(line: int, kind: str = kind, first: int = first, last: int = last) -> tuple[str, int]:
            return ("common", line - first) if first <= line <= last else (kind, line)

        for number, line in enumerate(source.splitlines(), start=1):
            if "return health(" in line.partition("--")[0]:
                wanted.add(key(number))
        lines: set[int] = set()
        for case in cases(kind):
            run_health(source, load(ARGOCD / GROUP / kind / case.input_path), lines=lines)
        reached |= {key(line) for line in lines}
    assert wanted - reached == set(), "outcomes no sample reaches (kind or common, line in the block)"


def embedded_scripts(name: str) -> dict[str, Any]:
    """The argocd-cm data a snippet file carries."""
    document = load(ARGOCD / name)
    if name == "argocd-cm-health.yaml":  # kubectl patch --patch-file, or a kustomize patch
        assert (document["apiVersion"], document["kind"]) == ("v1", "ConfigMap")
        assert document["metadata"] == {"name": "argocd-cm"}
        assert set(document) == {"apiVersion", "kind", "metadata", "data"}
        data: dict[str, Any] = document["data"]
        return data
    # the argo-cd Helm chart's values: configs.cm holds argocd-cm's data
    assert set(document) == {"configs"} and set(document["configs"]) == {"cm"}
    cm: dict[str, Any] = document["configs"]["cm"]
    return cm


@pytest.mark.parametrize("name", ["argocd-cm-health.yaml", "argo-cd-values.yaml"])
def test_snippet_embeds_the_scripts_verbatim(name: str) -> None:
    data = embedded_scripts(name)
    expected = {f"resource.customizations.health.{GROUP}_{kind}": script(kind) for kind in KINDS}
    assert sorted(data) == sorted(expected), name
    for key, text in expected.items():
        assert data[key] == text, (
            f"{name}: {key} differs from {GROUP}/{key.rpartition('_')[2]}/health.lua; "
            "paste the file's text under the key (indented, as a `|` block)"
        )


# --- what the operator writes ------------------------------------------------------------

GENERATION = 7


def with_status(kind: str, conditions: list[Condition], **fields: Any) -> dict[str, Any]:
    """An object whose status is built by the operator's own functions."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "default", "generation": GENERATION},
        "spec": {"replicas": 2} if kind == "ModelGateway" else {},
        "status": {
            "observedGeneration": GENERATION,
            "conditions": st.merge_conditions(None, conditions, GENERATION, "2026-05-04T10:02:07Z"),
            **fields,
        },
    }


def operator_conditions(kind: str, prerequisites: list[Condition], proxies: Condition) -> list[Condition]:
    """As routeway/status.py composes them: a gateway's Ready also waits for its
    proxy pods and a route's for its rollout (conditions that are not written), the other
    kinds' Ready for what is written."""
    if kind == "ModelGateway" or (kind == "ModelRoute" and proxies.type == st.ROLLOUT):
        return [*prerequisites, *st.summarize([*prerequisites, proxies])]
    return st.with_kstatus(prerequisites)


# The failing conditions the operator writes, per kind and reason (routeway/translate.py for
# Accepted/ResolvedRefs, routeway/status.py for Programmed and the proxies).
FAILING_REASONS: dict[str, dict[str, tuple[str, ...]]] = {
    "ModelRoute": {
        ACCEPTED: (
            st.REASON_INVALID,
            st.REASON_GATEWAY_NOT_FOUND,
            st.REASON_GATEWAY_INVALID,
            st.REASON_NOT_ALLOWED,
            st.REASON_MODEL_CONFLICT,
            st.REASON_NO_WEIGHT,
        ),
        RESOLVED_REFS: (st.REASON_BACKEND_NOT_FOUND, st.REASON_BACKEND_INVALID, st.REASON_BACKEND_UNRESOLVED),
        st.PROGRAMMED: (
            st.REASON_PENDING,
            st.REASON_NOT_ATTACHED,
            st.REASON_RENDER_FAILED,
            st.REASON_APPLY_FAILED,
        ),
        st.ROLLOUT: (st.REASON_ROLLOUT_PROGRESSING, st.REASON_ROLLOUT_PAUSED, st.REASON_ROLLED_BACK),
    },
    "ModelBackend": {
        ACCEPTED: (st.REASON_INVALID,),
        RESOLVED_REFS: (st.REASON_SECRET_NOT_FOUND, st.REASON_SECRET_KEY_NOT_FOUND),
    },
    "ModelGateway": {
        ACCEPTED: (st.REASON_INVALID,),
        RESOLVED_REFS: (st.REASON_SECRET_NOT_FOUND, st.REASON_SECRET_KEY_NOT_FOUND),
        st.PROGRAMMED: (st.REASON_NOT_ATTACHED, st.REASON_RENDER_FAILED, st.REASON_APPLY_FAILED),
        st.PROXIES_READY: (st.REASON_PROXIES_NOT_READY,),
    },
    "ModelClient": {
        ACCEPTED: (
            st.REASON_INVALID,
            st.REASON_GATEWAY_NOT_FOUND,
            st.REASON_GATEWAY_INVALID,
            st.REASON_NOT_ALLOWED,
            st.REASON_AUTH_DISABLED,
        ),
        RESOLVED_REFS: (st.REASON_SECRET_NOT_FOUND, st.REASON_SECRET_KEY_NOT_FOUND),
        st.PROGRAMMED: (
            st.REASON_PENDING,
            st.REASON_NOT_ATTACHED,
            st.REASON_RENDER_FAILED,
            st.REASON_APPLY_FAILED,
        ),
    },
}


def failures() -> list[tuple[str, Condition]]:
    out: list[tuple[str, Condition]] = []
    for kind, by_type in FAILING_REASONS.items():
        for ctype, reasons in by_type.items():
            out += [(kind, Condition(ctype, "False", reason, f"{reason} happened")) for reason in reasons]
        out.append((kind, Condition(ACCEPTED, "Unknown", "Pending", "not translated yet")))
        out.append((kind, Condition(RESOLVED_REFS, "Unknown", st.REASON_NOT_ACCEPTED, "not accepted")))
    return out


def test_every_failure_reason_is_mapped() -> None:
    """A reason added to routeway/status.py lands in FAILING_REASONS or among the Unknown
    conditions of `failures()` (and so gets a health status checked below)."""
    successes = {
        st.REASON_ACCEPTED,
        st.REASON_RESOLVED,
        st.REASON_PROGRAMMED,
        st.REASON_READY,
        st.REASON_RECONCILED,
    }
    declared = {v for k, v in vars(st).items() if k.startswith("REASON_")} - successes
    mapped = {failing.reason for _, failing in failures()}
    assert declared == mapped


FAILURES = failures()


@pytest.mark.parametrize(
    ("kind", "failing"), FAILURES, ids=[f"{k}-{c.type}={c.status}-{c.reason}" for k, c in FAILURES]
)
def test_operator_statuses_map_as_kstatus_says(kind: str, failing: Condition) -> None:
    good = {ACCEPTED: accepted(), RESOLVED_REFS: resolved(), st.PROGRAMMED: st.programmed("r1", "applied")}
    if kind == "ModelBackend":
        del good[st.PROGRAMMED]
    proxies = Condition(st.PROXIES_READY, "True", "Ready", "")
    if failing.type in (st.PROXIES_READY, st.ROLLOUT):
        proxies = failing
    else:
        good[failing.type] = failing
    conditions = operator_conditions(kind, list(good.values()), proxies)
    trio = {c.type: c for c in conditions if c.type in (st.READY, st.RECONCILING, st.STALLED)}
    assert trio[st.READY].status == "False"
    reconciling = failing.reason in st.PROGRESSING_REASONS
    assert trio[st.RECONCILING if reconciling else st.STALLED].status == "True"
    expected = "Progressing" if reconciling else "Degraded"
    if failing.reason == st.REASON_ROLLOUT_PAUSED:
        expected = "Suspended"  # a paused rollout waits for a person (the script's own rule)
    got = run_health(script(kind), with_status(kind, conditions))
    assert got["status"] == expected
    assert failing.message in got["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_operator_statuses_ready_and_stale(kind: str) -> None:
    prerequisites = [accepted(), resolved()] + (
        [st.programmed("r1", "applied")] if kind != "ModelBackend" else []
    )
    conditions = operator_conditions(kind, prerequisites, Condition(st.PROXIES_READY, "True", "Ready", ""))
    obj = with_status(kind, conditions, routes=1, readyReplicas=2)
    assert run_health(script(kind), obj)["status"] == "Healthy"
    obj["metadata"]["generation"] = GENERATION + 1  # a spec change the operator has not seen yet
    assert run_health(script(kind), obj) == {
        "status": "Progressing",
        "message": f"Waiting for the Routeway operator to observe generation {GENERATION + 1} "
        f"(status is for generation {GENERATION})",
    }


def test_sandbox_is_as_strict_as_argo_cd() -> None:
    """The emulation itself: what an argocd-cm script cannot use fails here too."""
    obj: dict[str, Any] = {"metadata": {"name": "x"}}
    for forbidden in ('string.upper("a")', '("a"):upper()', "math.floor(1.5)", 'io.write("a")'):
        with pytest.raises(lupa.lua51.LuaError):
            run_health(f"return {{ status = {forbidden} }}", obj)
    assert run_health('return { status = "Healthy", message = obj.metadata.name .. os.time() * 0 }', obj) == {
        "status": "Healthy",
        "message": "x0",
    }


def test_kubectl_patch_adds_the_checks_and_keeps_other_settings(helm_binary: Path, tmp_path: Path) -> None:
    """The README's `kubectl patch --patch-file`, run for real (locally, no cluster) on a stand-in
    argocd-cm that already holds settings: they stay, the checks of every kind are added verbatim."""
    kubectl = find_tool("kubectl")  # scripts/fetch-tools brings it with helm (the fixture)
    assert kubectl is not None, "kubectl not found on PATH or in tools/bin"
    existing = {
        "url": "https://argocd.example.com",
        "resource.customizations.health.cert-manager.io_Certificate": 'hs = {status = "Healthy"}\nreturn hs\n',
    }
    live = tmp_path / "argocd-cm.yaml"
    live.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": "argocd"},
                "data": existing,
            }
        )
    )
    patch = ARGOCD / "argocd-cm-health.yaml"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    env["KUBECACHEDIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [str(kubectl), "patch", "--local", "-f", str(live), "--patch-file", str(patch), "-o", "yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    patched = yaml.safe_load(result.stdout)
    assert patched["metadata"]["namespace"] == "argocd"
    assert patched["data"] == existing | {
        f"resource.customizations.health.{GROUP}_{kind}": script(kind) for kind in KINDS
    }
