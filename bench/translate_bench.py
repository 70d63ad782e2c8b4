"""Control-plane scale: translate and render 10,000 routes over 1,000 backends.

    .venv/bin/python bench/translate_bench.py [--routes 10000] [--backends 1000] [--repeat 5]

Issue 2's target: translating and rendering that inventory takes under a second. The
inventory is one ModelGateway open to all namespaces and ten namespaces, each with a tenth of
the backends (provider openai, a credential Secret, max concurrency) and a tenth of the
routes (two weighted backends, a fallback, retries; every other route sticky by header), so
the one ProxyConfig holds all 10,000 routes: the largest document a proxy would load.

Stages timed separately (best and median of --repeat runs, after one warm-up):
- build: pydantic model_validate of every object from dicts (what parsing YAML/API objects costs
  after the YAML itself; not part of the target);
- translate: `translate(Inventory)`;
- render: `render_all(translation)` (ProxyConfig models, revision hash included);
- serialise: `ProxyConfig.to_json()` of the rendered config (what the operator writes);
- parse: `parse_proxy_config(bytes)` (what each proxy worker does on a reload);
- once, with the collector on: `load_local` of the same inventory written to one YAML file
  (what `routeway serve` does at start and on every saved change).
Prints markdown; writes bench/out/translate-<time>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from routeway.local import load_local
from routeway.proxyconfig import parse_proxy_config
from routeway.render import render_all
from routeway.resources import ModelBackend, ModelGateway, ModelRoute, Secret
from routeway.translate import Inventory, translate

OUT = Path(__file__).resolve().parent / "out"
NAMESPACES = 10
T = TypeVar("T")


def build_documents(routes: int, backends: int) -> list[dict[str, Any]]:
    """Plain dicts as they come out of YAML or the API server."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "routeway.dev/v1alpha1",
            "kind": "ModelGateway",
            "metadata": {"name": "default", "namespace": "default"},
            "spec": {"allowedRoutes": {"namespaces": {"from": "All"}}},
        }
    ]
    per_ns_backends = backends // NAMESPACES
    per_ns_routes = routes // NAMESPACES
    for n in range(NAMESPACES):
        ns = f"team-{n}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "upstream-key", "namespace": ns},
                "stringData": {"api-key": "not-a-real-key"},
            }
        )
        for b in range(per_ns_backends):
            docs.append(
                {
                    "apiVersion": "routeway.dev/v1alpha1",
                    "kind": "ModelBackend",
                    "metadata": {"name": f"backend-{b}", "namespace": ns},
                    "spec": {
                        "provider": "openai",
                        "url": f"http://vllm-{b}.{ns}.svc:8000/v1",
                        "model": f"model-{b}",
                        "version": f"v{b % 3}",
                        "apiKeySecretRef": {"name": "upstream-key", "key": "api-key"},
                        "maxConcurrency": 64,
                        "timeouts": {"connect": "2s", "firstByte": "30s", "idle": "10s"},
                    },
                }
            )
        for r in range(per_ns_routes):
            spec: dict[str, Any] = {
                "model": f"{ns}-model-{r}",
                "gatewayRef": {"name": "default", "namespace": "default"},
                "backends": [
                    {"name": f"backend-{r % per_ns_backends}", "weight": 90},
                    {"name": f"backend-{(r + 1) % per_ns_backends}", "weight": 10},
                ],
                "fallbacks": [{"name": f"backend-{(r + 2) % per_ns_backends}"}],
                "retries": {"attempts": 2},
                "timeout": "120s",
            }
            if r % 2:
                spec["stickiness"] = {"header": "x-session-id"}
            docs.append(
                {
                    "apiVersion": "routeway.dev/v1alpha1",
                    "kind": "ModelRoute",
                    "metadata": {"name": f"route-{r}", "namespace": ns},
                    "spec": spec,
                }
            )
    return docs


KINDS: dict[str, type[ModelBackend] | type[ModelRoute] | type[ModelGateway] | type[Secret]] = {
    "ModelBackend": ModelBackend,
    "ModelRoute": ModelRoute,
    "ModelGateway": ModelGateway,
    "Secret": Secret,
}


def build_objects(docs: list[dict[str, Any]]) -> list[ModelBackend | ModelRoute | ModelGateway | Secret]:
    return [KINDS[d["kind"]].model_validate(d) for d in docs]


GC_MODES = ("gc on", "gc on, inventory frozen", "gc off")


def timed(step: Callable[[], T], repeat: int, mode: str) -> tuple[T, list[float]]:
    """Run once to warm up, then `repeat` times, under one garbage-collector mode; CPU seconds.

    CPU time of this process (`time.process_time`), not wall time: on a machine shared with
    other sessions the wall clock also counts the time this process waited for a core.

    "gc on" is what a process really pays: with tens of thousands of live models, the
    generation-2 passes triggered by the new objects are a large part of the time.
    "gc on, inventory frozen" calls `gc.freeze()` first (objects alive now are never scanned
    again), which an operator can do after loading a snapshot. "gc off" is timeit's way.
    """
    result = step()
    times = []
    for _ in range(repeat):
        gc.collect()
        if mode != "gc on":
            gc.freeze()
        if mode == "gc off":
            gc.disable()
        try:
            start = time.process_time()
            result = step()
            times.append(time.process_time() - start)
        finally:
            gc.enable()
            gc.unfreeze()
    return result, times


def main() -> int:
    parser = argparse.ArgumentParser(description="translate + render scale benchmark")
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--backends", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    docs = build_documents(args.routes, args.backends)
    objects = build_objects(docs)
    inventory = Inventory.from_objects(objects)
    translation = translate(inventory)
    bad = {str(k): f for k, f in translation.findings.items() if f}
    if bad:
        print(f"unexpected findings on {len(bad)} objects, e.g. {next(iter(bad.items()))}", file=sys.stderr)
        return 1
    [config] = render_all(translation).values()
    if len(config.routes) != args.routes or len(config.backends) != args.backends:
        print(f"rendered {len(config.routes)} routes, {len(config.backends)} backends", file=sys.stderr)
        return 1
    document = config.to_json()
    steps: dict[str, Callable[[], object]] = {
        "build (model_validate)": lambda: build_objects(docs),
        "translate": lambda: translate(inventory),
        "render_all": lambda: render_all(translation),
        "translate + render (target < 1 s)": lambda: render_all(translate(Inventory.from_objects(objects))),
        "ProxyConfig.to_json": config.to_json,
        "parse_proxy_config": lambda: parse_proxy_config(document),
    }
    stages = {
        (name, mode): timed(step, args.repeat, mode)[1] for name, step in steps.items() for mode in GC_MODES
    }
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder, "inventory.yaml")
        manifest.write_text(yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
        local, local_t = timed(lambda: load_local([str(manifest)]), 1, "gc on")
    if local.problems or local.config is None or len(local.config.routes) != args.routes:
        print(f"load_local did not render the inventory: {local.problems[:3]}", file=sys.stderr)
        return 1
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": Path("/proc/loadavg").read_text().split()[:3],
        },
        "routes": args.routes,
        "backends": args.backends,
        "objects": len(objects),
        "load_local_yaml_cpu_seconds_gc_on": local_t,
        "config_bytes": len(document),
        "cpu_seconds": {
            f"{name} [{mode}]": {"best": min(t), "median": statistics.median(t), "all": t}
            for (name, mode), t in stages.items()
        },
    }
    OUT.mkdir(exist_ok=True)
    path = OUT / f"translate-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2))
    print(
        f"{args.routes} routes, {args.backends} backends, {len(objects)} objects; "
        f"ProxyConfig {len(document) / 1e6:.1f} MB; {args.repeat} runs after a warm-up"
    )
    print()
    print("CPU seconds of this process (not wall time)\n")
    print("| stage | " + " | ".join(f"{mode}: best / median s" for mode in GC_MODES) + " |")
    print("|---|" + "---:|" * len(GC_MODES))
    for name in steps:
        cells = [stages[name, mode] for mode in GC_MODES]
        print(f"| {name} | " + " | ".join(f"{min(t):.3f} / {statistics.median(t):.3f}" for t in cells) + " |")
    print(
        f"\n`routeway serve` start/reload of the same inventory from one YAML file "
        f"(`load_local`: YAML + models + translate + render + credentials), gc on: {local_t[0]:.2f} s CPU"
    )
    print(f"\nJSON: {path.relative_to(OUT.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
