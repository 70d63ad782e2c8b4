"""Each process of a `--workers 2` group says once which metric and upstream paths it uses.

The workers are where the multiprocess start-up proof runs for real (PROMETHEUS_MULTIPROC_DIR
set before prometheus-client is imported); the supervisor keeps single-process metrics. What
the lines say follows ROUTEWAY_FAST_PATHS, which scripts/test sets to `off` for the second
run of the proxy and process tests. Requests are answered and counted on either path
(test_workers.py checks the counts in both runs).
"""

from __future__ import annotations

import re
from pathlib import Path

from process_rig import Launch, Upstream, eventually, manifest
from routeway_proxy.fastpaths import fast_paths_refusal

LINE = re.compile(r"\[(\d+)\] ((?:metrics|upstream POSTs): .*)")


async def test_every_process_names_its_paths_once(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path), workers=2)

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(ready, what="both workers listening", within=30)
    assert (await routeway.chat()).status == 200
    lines: dict[str, list[str]] = {}
    for pid, line in LINE.findall(routeway.log()):
        lines.setdefault(pid, []).append(line)
    kinds = sorted(sorted(line.split(":")[0] for line in found) for found in lines.values())
    assert kinds == [["metrics"], ["metrics", "upstream POSTs"], ["metrics", "upstream POSTs"]], lines
    workers = [found for found in lines.values() if len(found) == 2]
    [supervisor] = [found for found in lines.values() if len(found) == 1]
    if fast_paths_refusal() is not None:
        for found in lines.values():
            assert all(line.endswith("(ROUTEWAY_FAST_PATHS=off)") for line in found), found
        return
    assert supervisor[0].startswith("metrics: direct value updates (single-process; start-up proof passed")
    for found in workers:
        assert any(
            line.startswith("metrics: direct value updates (multiprocess; start-up proof") for line in found
        )
        assert any(line.startswith("upstream POSTs: the lean path (aiohttp 3.14.") for line in found)
