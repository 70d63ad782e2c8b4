"""Steady traffic for the canary demo, printing which arm answered (the x-routeway-arm header).

    python examples/canary/load.py [--base-url http://127.0.0.1:8080/v1] [--rate 20]

Sends `--rate` chat completions a second with the official openai client (no client retries,
so every failure shows) and prints one line a second: requests per arm, failures per arm, and
the upstream model that answered. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--model", default="chat")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default: 20)")
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=10.0)
    counts: collections.Counter[str] = collections.Counter()
    models: set[str] = set()
    lock = threading.Lock()

    def one() -> None:
        arm = "-"
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=args.model, messages=[{"role": "user", "content": "Hello"}]
            )
            arm = raw.headers.get("x-routeway-arm", "-")
            model = raw.parse().model
            with lock:
                counts[arm] += 1
                models.add(model)
        except openai.APIStatusError as exc:
            arm = exc.response.headers.get("x-routeway-arm", "-")
            with lock:
                counts[arm] += 1
                counts[f"{arm} failed"] += 1
        except openai.APIConnectionError:
            with lock:
                counts["unreachable"] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        next_send = time.monotonic()
        next_print = started + 1.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_print:
                    with lock:
                        line = summary(now - started, counts, models)
                        counts.clear()
                        models.clear()
                    print(line, flush=True)
                    next_print += 1.0
                if now >= next_send:
                    pool.submit(one)
                    next_send += 1.0 / args.rate
                time.sleep(max(0.0, min(next_send, next_print) - time.monotonic()))
        except KeyboardInterrupt:
            pass


def summary(elapsed: float, counts: collections.Counter[str], models: set[str]) -> str:
    parts = []
    for arm in ("stable", "canary", "-"):
        if counts[arm]:
            failed = counts[f"{arm} failed"]
            label = arm if arm != "-" else "no arm"
            parts.append(f"{label} {counts[arm]:3d}" + (f" ({failed} failed)" if failed else ""))
    if counts["unreachable"]:
        parts.append(f"unreachable {counts['unreachable']}")
    return (
        f"{elapsed:5.0f}s  "
        + "  ".join(parts)
        + (f"   models: {', '.join(sorted(models))}" if models else "")
    )


if __name__ == "__main__":
    main()
