"""Micro-benchmark of admission (`parse_request`): a base commit's against the working tree's,
interleaved in one process, on three bodies: the benchmark's small chat body, a 40-message
conversation (long strings, few brackets) and a tool-heavy body (150 multi-part messages and
20 tool schemas: more brackets than `MAX_JSON_DEPTH`, so the depth check runs in full).

    .venv/bin/python bench/admit_bench.py [--base REV] [--number 5000] [--rounds 7]

Prints the best round of each, and what the depth check's parts cost on their own. A
micro-benchmark understates in-server cost (CONTRIBUTING.md); it shows the order of magnitude.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
import types
from pathlib import Path
from typing import Any

import orjson
from routeway_proxy.pipeline import admit

ROOT = Path(__file__).resolve().parent.parent

BODIES: dict[str, bytes] = {
    "bench body (95 B)": b'{"model":"bench","messages":[{"role":"user","content":"Say something short."}],"max_tokens":16}',
    "40 messages (9 KB, 42 brackets)": orjson.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user" if i % 2 else "assistant", "content": "x" * 200} for i in range(40)],
            "max_tokens": 256,
        }
    ),
    "tool-heavy (11 KB, 553 brackets)": orjson.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]} for _ in range(150)],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": f"f{i}",
                        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
                    },
                }
                for i in range(20)
            ],
        }
    ),
}


def load_base(rev: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:proxy/routeway_proxy/pipeline/admit.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("admit_base")
    exec(compile(source, f"{rev}:admit.py", "exec"), module.__dict__)
    return module


def best(call: Any, number: int, rounds: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=rounds)) / number * 1e6


def measure(name: str, raw: bytes, base: types.ModuleType, number: int, rounds: int) -> str:
    body = orjson.loads(raw)
    before = after = float("inf")
    for _ in range(rounds):  # interleaved: a load change on a shared machine hits both
        before = min(before, best(lambda: base.parse_request("chat", raw), number, 1))
        after = min(after, best(lambda: admit.parse_request("chat", raw), number, 1))
    loads = best(lambda: orjson.loads(raw), number, rounds)
    count = best(lambda: raw.count(b"[") + raw.count(b"{"), number, rounds)
    check = best(lambda: admit.nests_too_deep(body), number, rounds)
    walk = best(lambda: admit._nests_deeper(body, admit.MAX_JSON_DEPTH), number, rounds)
    return (
        f"{name}: parse_request {before:.2f} -> {after:.2f} us ({after / before:.2f}x); "
        f"orjson.loads {loads:.2f}, bracket count {count:.2f}, wrapped dumps {check:.2f}, walk {walk:.2f} us"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="f141a01", help="the commit before the depth check")
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    base = load_base(args.base)
    print(f"orjson dumps wraps: {admit._DUMPS_WRAPS} (None: the walk)")
    for name, raw in BODIES.items():
        print(measure(name, raw, base, args.number, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
