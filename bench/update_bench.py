"""Worker config updates: the JSON message against the pickle it replaced, on 10,000 routes.

    .venv/bin/python bench/update_bench.py [--routes 10000] [--backends 1000] [--repeat 7]

A supervisor encodes each update once and every worker decodes it (`proxy/routeway_proxy/
relay.py`); decoding blocks the worker's loop, so it is the number that matters. Not the
request hot path: it runs once per config change. Compared, in CPU seconds of this process
(best and median of --repeat runs after one warm-up, the collector on as in a worker):

- pickle (before): `pickle.dumps(update, HIGHEST_PROTOCOL)` / `pickle.loads(payload)`, as
  relay.py did (the load ran with the collector on), and the load with the collector paused,
  so the difference between the two formats is not credited to the pause alone;
- JSON (now): `encode_update` / `decode_update` (`routeway.configupdate`), and the two halves
  of the decode: `orjson.loads` and `parse_proxy_config` of the config document.

The config is bench/translate_bench.py's inventory (one gateway, 10,000 routes over 1,000
backends, ten credentials), the largest document a proxy would load. Prints markdown;
writes bench/out/update-<time>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from translate_bench import build_documents, build_objects

from routeway.configupdate import ConfigLoaded, decode_update, encode_update
from routeway.gcpause import gc_paused
from routeway.proxyconfig import parse_proxy_config
from routeway.render import render_all
from routeway.translate import Inventory, translate

OUT = Path(__file__).resolve().parent / "out"


def timed(step: Callable[[], object], repeat: int) -> list[float]:
    """CPU seconds of `repeat` runs after a warm-up; the collector on, as in a worker."""
    step()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description="worker update encode/decode benchmark")
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--backends", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    inventory = Inventory.from_objects(build_objects(build_documents(args.routes, args.backends)))
    [config] = render_all(translate(inventory)).values()
    credentials = {f"team-{n}/upstream-key/api-key": f"sk-{n:02d}" + "x" * 40 for n in range(10)}
    update = ConfigLoaded(config, credentials, "manifests/", ())
    pickled = pickle.dumps(update, protocol=pickle.HIGHEST_PROTOCOL)
    message = encode_update(update)
    document = orjson.loads(message)
    if pickle.loads(pickled) != update or decode_update(message) != update:
        print("an update did not round-trip", file=sys.stderr)
        return 1

    def unpickle_paused() -> object:
        with gc_paused():
            return pickle.loads(pickled)

    steps: dict[str, Callable[[], object]] = {
        "pickle.dumps (before, supervisor)": lambda: pickle.dumps(update, protocol=pickle.HIGHEST_PROTOCOL),
        "pickle.loads (before, each worker)": lambda: pickle.loads(pickled),
        "pickle.loads, collector paused": unpickle_paused,
        "encode_update (now, supervisor)": lambda: encode_update(update),
        "**decode_update (now, each worker)**": lambda: decode_update(message),
        "  of which orjson.loads": lambda: orjson.loads(message),
        "  of which parse_proxy_config": lambda: parse_proxy_config(document["config"]),
    }
    print(f"{len(config.routes)} routes, {len(config.backends)} backends, {len(credentials)} credentials")
    print(f"payload: pickle {len(pickled):,} bytes, JSON {len(message):,} bytes\n")
    print("| step | best s | median s |\n|---|---:|---:|")
    results: dict[str, list[float]] = {}
    for name, step in steps.items():
        results[name] = times = timed(step, args.repeat)
        print(f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} |")
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average": list(os.getloadavg()),
        "payload_bytes": {"pickle": len(pickled), "json": len(message)},
        "cpu_seconds": results,
    }
    (OUT / f"update-{stamp}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
