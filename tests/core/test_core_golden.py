"""Golden files: manifests in, every gateway's ProxyConfig and every object's conditions out.

Any change of translation or rendering behaviour shows up as a diff of a `.out.json` in review.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from routeway.local import evaluate
from routeway.render import render_all

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))


def produce(case: str) -> dict[str, Any]:
    ev = evaluate([str(GOLDEN / f"{case}.in.yaml")])
    return {
        "configs": {
            f"{ns}/{name}": cfg.to_document() for (ns, name), cfg in render_all(ev.translation).items()
        },
        "conditions": {
            key.qualified: [
                {"type": x.type, "status": x.status, "reason": x.reason, "message": x.message} for x in conds
            ]
            for key, conds in ev.translation.conditions.items()
        },
    }


def test_there_are_cases():
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    out = GOLDEN / f"{case}.out.json"
    actual = json.dumps(produce(case), indent=2, sort_keys=True) + "\n"
    if os.environ.get("ROUTEWAY_UPDATE_GOLDEN") == "1":
        out.write_text(actual)
    assert out.exists(), f"{out.name} missing: run with ROUTEWAY_UPDATE_GOLDEN=1 and review it"
    assert actual == out.read_text(), (
        f"{case}: output changed; if intended, regenerate (see tests/golden/README.md)"
    )


def test_no_secret_value_in_any_rendered_config():
    for case in CASES:
        text = json.dumps(produce(case)["configs"])
        assert "sk-live-must-never-appear" not in text
        assert "c2stdGVhbS1h" not in text and "sk-team-a" not in text
