"""Fuzzing the client side of the gateway with hypothesis, a bounded number of examples.

Methods, paths (odd suffixes, percent-escapes, raw high bytes), headers the gateway reads
(Authorization and api-key in every odd form, Content-Type, Cache-Control, the sticky header,
Accept-Encoding, X-Forwarded-*, random names; values with obs-text bytes and up to 8 KB (aiohttp's line limit)) and
bodies (near-valid documents with wrong-typed fields, random JSON, nesting up to 1,500 levels,
inserted garbage bytes, BOM, NaN/Infinity, huge numbers, duplicate keys) against a real
gateway app with client keys, a loopback upstream and the mock provider (`proxy_fuzz`). The
oracle: no gateway-made 5xx, every gateway-made error in the OpenAI shape, no ERROR record or
traceback in the logs, the client key never echoed, the upstream only ever sent JSON objects.
`scripts/fuzz` runs the same strategies for longer and prints the counts.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from proxy_fuzz import Case, Tally, fuzz_target, run_case
from proxy_fuzz_cases import cases

EXAMPLES = 300


def test_no_request_makes_the_gateway_fail() -> None:
    loop = asyncio.new_event_loop()
    tally = Tally()
    context = fuzz_target()
    target = loop.run_until_complete(context.__aenter__())
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases())
        def one(case: Case) -> None:
            problems = loop.run_until_complete(run_case(target, case, tally))
            assert not problems, (case, problems)

        one()
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()
    assert tally.cases >= EXAMPLES
    # the run reached every stage: refusals before the body, refusals of the body, answers
    assert {"2xx", "401 gateway invalid_api_key"} <= set(tally.outcomes), tally.outcomes
    assert any(name.startswith("400 gateway") for name in tally.outcomes), tally.outcomes
