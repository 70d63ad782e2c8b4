"""The longer fuzz run: the suite's strategies (`tests/proxy/proxy_fuzz_cases.py`) and oracle
(`tests/proxy/proxy_fuzz.py`), many more examples, every failure collected instead of the
first, and the counts printed.

    scripts/fuzz [--examples 20000] [--seed N]

A real gateway app (`create_proxy_app`, client keys required) on 127.0.0.1 with a loopback
aiohttp upstream and the built-in mock provider; requests as raw bytes over fresh sockets.
Prints how many cases ran, each outcome's count (status, who made it, the error code), and
each failing case with what was wrong. Exits 1 when any case failed. Not part of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "proxy"))

from hypothesis import HealthCheck, Phase, given, seed, settings
from proxy_fuzz import Case, Tally, fuzz_target, run_case
from proxy_fuzz_cases import cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    tally = Tally()
    context = fuzz_target()
    target = loop.run_until_complete(context.__aenter__())
    started = time.monotonic()

    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every failure is collected as it was found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def one(case: Case) -> None:
        loop.run_until_complete(run_case(target, case, tally))
        if tally.cases % 1000 == 0:
            print(f"... {tally.cases} cases, {len(tally.failures)} failing", file=sys.stderr, flush=True)

    try:
        if args.seed is not None:
            seed(args.seed)(one)()
        else:
            one()
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()
    elapsed = time.monotonic() - started
    for line in tally.lines():
        print(line)
    print(f"in {elapsed:.0f} s")
    for case, problems in tally.failures[:50]:
        print(f"FAILED {case!r}\n    {problems}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
