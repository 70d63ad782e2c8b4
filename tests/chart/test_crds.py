"""The chart ships exactly the project's CRDs, plus kopf's peering CRDs.

Helm cannot read files outside the chart, so charts/routeway/crds/ holds copies of crds/*.yaml
(the generated routeway.dev_* and kopf's peering CRDs) made by scripts/sync-chart-crds; a stale
or extra copy fails here.
"""

from __future__ import annotations

from collections.abc import Callable

from .conftest import CHART, ROOT, Rendered

SOURCE = ROOT / "crds"
COPIES = CHART / "crds"
SYNC_HINT = "run scripts/sync-chart-crds and commit charts/routeway/crds/"


def test_chart_crds_are_byte_identical_copies_of_generated_crds() -> None:
    sources = {p.name: p.read_bytes() for p in sorted(SOURCE.glob("*.yaml"))}
    copies = {p.name: p.read_bytes() for p in sorted(COPIES.glob("*.yaml"))}
    assert sources, f"no generated CRDs in {SOURCE} (generate them first)"
    missing = sorted(sources.keys() - copies.keys())
    extra = sorted(copies.keys() - sources.keys())
    stale = sorted(name for name in sources.keys() & copies.keys() if sources[name] != copies[name])
    assert not (missing or extra or stale), (
        f"chart CRDs out of date: {missing=} {extra=} {stale=}; {SYNC_HINT}"
    )


def test_chart_installs_routeway_and_kopf_peering_crds(template: Callable[..., Rendered]) -> None:
    crds = {c["metadata"]["name"]: c["spec"] for c in template().of_kind("CustomResourceDefinition")}
    assert set(crds) == {
        "modelgateways.routeway.dev",
        "modelroutes.routeway.dev",
        "modelbackends.routeway.dev",
        "modelclients.routeway.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert crds["clusterkopfpeerings.kopf.dev"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["scope"] == "Namespaced"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        (version,) = crds[name]["versions"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        # kopf writes one key per operator identity into status: it must not be pruned.
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
