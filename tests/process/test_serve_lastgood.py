"""`routeway serve` keeps each object's last good version (issue 14 item 3), as processes.

Covers: a route whose edit flips between good versions and a typo in its backend names, many
times under steady load on two workers: no request fails, a typo never reaches the upstream
(the last good version's model does), each good version is live once saved, and each typo is
reported at `/routes` as serving the last good version; a file that stops parsing keeps its
objects' last good versions while an edit in another file applies; an object that breaks its
schema keeps its last good version; a first version that is broken is absent (404), not 503 for
everyone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from process_rig import Launch, Routeway, Upstream, eventually, manifest, write_atomically

FLIPS = 40  # typo, good, typo, ...: 20 of each
LAST_GOOD = "serving the last good version"
GOOD_BACKENDS = "backends: [{name: upstream}]"
TYPO_BACKENDS = "backends: [{name: upstreem}]"


async def started(routeway: Routeway) -> Routeway:
    """Wait until the first config serves (launch waits for /healthz only)."""

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(ready, what="the first config applied", within=30)
    return routeway


async def problems(routeway: Routeway) -> list[str]:
    _, routes = await routeway.get_admin("/routes")
    found: list[str] = routes["problems"]
    return found


async def _live(upstream: Upstream, model: str) -> bool:
    """The upstream's latest requests asked for `model` (several, so no stale one in flight)."""
    return len(upstream.seen) > 3 and {s["model"] for s in upstream.seen[-3:]} == {model}


def typo(text: str) -> str:
    assert GOOD_BACKENDS in text
    return text.replace(GOOD_BACKENDS, TYPO_BACKENDS)


async def test_route_flipping_between_good_and_typo_under_load_fails_no_request(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url, model="model-0"))
    routeway = await started(await launch("serve", "-f", str(path), workers=2))
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            statuses.append((await routeway.chat()).status)

    clients = [asyncio.create_task(client()) for _ in range(4)]
    for flip in range(1, FLIPS + 1):
        # Every save also edits the backend (a good edit): it applies either way.
        live_model = f"model-{flip}"
        if flip % 2:
            # A typo in the route: it keeps its last good version and says so.
            write_atomically(path, typo(manifest(upstream.url, model=live_model)))

            async def reported() -> bool:
                found = await problems(routeway)
                return any("upstreem" in p for p in found) and any(LAST_GOOD in p for p in found)

            await eventually(reported, what=f"typo {flip} reported")
            await eventually(lambda m=live_model: _live(upstream, m), what=f"backend edit {flip} live")
        else:
            write_atomically(path, manifest(upstream.url, model=live_model))

            async def fixed(model: str = live_model) -> bool:
                return await _live(upstream, model) and not await problems(routeway)

            await eventually(fixed, what=f"good version {flip} live")
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > FLIPS * 4
    assert set(statuses) == {200}
    assert await routeway.stop() == 0


def second_route(upstream_url: str, public: str, model: str) -> str:
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {public}-backend, namespace: default}}
spec: {{provider: openai, url: {upstream_url}, model: {model}}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: {public}, namespace: default}}
spec:
  model: {public}
  backends: [{{name: {public}-backend}}]
"""


async def _models(
    routeway: Routeway, upstream: Upstream, public: str, **extra: Any
) -> tuple[int, str | None]:
    before = len(upstream.seen)
    response = await routeway.chat(public, **extra)
    return response.status, upstream.seen[-1]["model"] if len(upstream.seen) > before else None


async def test_a_file_that_stops_parsing_keeps_its_objects_while_other_files_apply(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    main, other = tmp_path / "main.yaml", tmp_path / "other.yaml"
    main.write_text(manifest(upstream.url, model="model-a"))
    other.write_text(second_route(upstream.url, "code", "code-1"))
    routeway = await started(await launch("serve", "-f", str(tmp_path)))
    assert await _models(routeway, upstream, "code") == (200, "code-1")

    write_atomically(other, "kind: ModelRoute\nspec: [not, a, mapping\n")  # mid-edit, broken YAML
    write_atomically(main, manifest(upstream.url, model="model-b"))

    async def applied() -> bool:
        return await _models(routeway, upstream, "chat") == (200, "model-b")

    await eventually(applied, what="the other file's edit applied")
    assert await _models(routeway, upstream, "code") == (200, "code-1")
    reported = await problems(routeway)
    assert any("malformed YAML" in p for p in reported)
    assert any("ModelRoute/code" in p and LAST_GOOD in p for p in reported)
    _, routes = await routeway.get_admin("/routes")
    assert routes["lastRejection"] is None

    # a schema error in the route: it keeps its last good version (absent, it would be a 404)
    write_atomically(
        other,
        second_route(upstream.url, "code", "code-1").replace(
            "{name: code-backend}", "{name: code-backend, weight: -1}"
        ),
    )

    async def schema_error_reported() -> bool:
        return any("weight" in p for p in await problems(routeway))

    await eventually(schema_error_reported, what="the schema error reported")
    assert await _models(routeway, upstream, "code") == (200, "code-1")

    write_atomically(other, second_route(upstream.url, "code", "code-3"))
    await eventually(lambda: _code_is(routeway, upstream, "code-3"), what="the fixed file applied")
    assert await problems(routeway) == []
    assert await routeway.stop() == 0


async def _code_is(routeway: Routeway, upstream: Upstream, model: str) -> bool:
    return await _models(routeway, upstream, "code") == (200, model)


async def test_a_first_version_that_is_broken_is_absent(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    main, other = tmp_path / "main.yaml", tmp_path / "other.yaml"
    main.write_text(manifest(upstream.url))
    routeway = await started(await launch("serve", "-f", str(tmp_path)))
    write_atomically(
        other, typo(manifest(upstream.url, public="code").replace("name: upstream,", "name: second,"))
    )

    async def reported() -> bool:
        return any("upstreem" in p for p in await problems(routeway))

    await eventually(reported, what="the new route's problem reported")
    assert (await routeway.chat("chat")).status == 200
    assert (await routeway.chat("code")).status == 503  # rendered without a backend, as before
    assert not any(LAST_GOOD in p for p in await problems(routeway))
    assert await routeway.stop() == 0
