"""`routeway serve` as a user runs it: manifests on disk, edited while it serves.

Covers: a request routed from manifests (credential from a Secret in the same file); an edit
live without restart (revision header changes, new upstream model); a new file in a watched
folder; an invalid edit rejected and shown at /routes while the last good config serves;
an invalid first load (starts, 503 until fixed; SIGTERM still exits 0 if never fixed); a
route with a dangling reference (everything else serves, the problem shows at /routes); a
missing path (exit 2); the quick start streamed through the official openai SDK.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
from process_rig import Launch, Upstream, eventually, manifest, write_atomically


async def test_serve_routes_and_picks_up_edits(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    upstream.expected_key = "sk-from-secret"
    folder = tmp_path / "manifests"
    folder.mkdir()
    chat = folder / "chat.yaml"
    chat.write_text(manifest(upstream.url, model="model-a", key="sk-from-secret"))
    routeway = await launch("serve", "-f", str(folder))

    first = await routeway.chat()
    assert first.status == 200
    assert first.headers["x-routeway-route"] == "default/chat"
    assert upstream.seen[-1] == {"model": "model-a", "authorization": "Bearer sk-from-secret"}
    revision = first.headers["x-routeway-revision"]
    assert (await routeway.get_admin("/readyz"))[0] == 200

    # An edit saved in place (not atomically) is live without a restart.
    chat.write_text(manifest(upstream.url, model="model-b", key="sk-from-secret"))

    async def new_revision() -> bool:
        response = await routeway.chat()
        return response.status == 200 and response.headers["x-routeway-revision"] != revision

    await eventually(new_revision, what="revision change after an edit")
    assert upstream.seen[-1]["model"] == "model-b"

    # A new file in the watched folder adds a route.
    write_atomically(folder / "more.yaml", manifest(upstream.url, public="more").split("---\n")[1])

    async def more_routed() -> bool:
        return (await routeway.chat("more")).status == 200

    await eventually(more_routed, what="route from a new file")
    assert await routeway.stop() == 0
    assert "sk-from-secret" not in routeway.log()


async def test_invalid_edit_keeps_last_good_config(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url))
    routeway = await launch("serve", "-f", str(path))
    good = (await routeway.chat()).headers["x-routeway-revision"]

    write_atomically(path, manifest(upstream.url).replace("provider: openai", "provider: nonsense"))

    async def error_shown() -> bool:
        _, routes = await routeway.get_admin("/routes")
        return "spec.provider" in str(routes)

    await eventually(error_shown, what="validation error at /routes")
    response = await routeway.chat()
    assert response.status == 200
    assert response.headers["x-routeway-revision"] == good
    assert (await routeway.get_admin("/readyz"))[0] == 200
    assert "spec.provider" in routeway.log()
    assert await routeway.stop() == 0


async def test_invalid_first_load_waits_for_a_fix(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text(manifest(upstream.url).replace("provider: openai", "provider: nonsense"))
    routeway = await launch("serve", "-f", str(path))
    assert (await routeway.get_admin("/readyz"))[0] == 503
    assert (await routeway.chat()).status == 503

    path.write_text(manifest(upstream.url))

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(ready, what="/readyz after the fix")
    assert (await routeway.chat()).status == 200
    assert await routeway.stop() == 0


async def test_never_valid_still_drains_to_exit_0(tmp_path: Path, launch: Launch) -> None:
    path = tmp_path / "routeway.yaml"
    path.write_text("kind: ModelRoute\nmetadata: {name: chat}\n")
    routeway = await launch("serve", "-f", str(path))
    assert (await routeway.get_admin("/readyz"))[0] == 503
    assert await routeway.stop() == 0  # SIGTERM is an orderly stop, whatever the config was
    assert "rejected" in routeway.log()


async def test_dangling_reference_serves_the_rest(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    path = tmp_path / "routeway.yaml"
    ghost = (
        "\n---\napiVersion: routeway.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: ghostly}\n"
        "spec: {model: ghostly, backends: [{name: ghost}]}\n"
    )
    path.write_text(manifest(upstream.url) + ghost)
    routeway = await launch("serve", "-f", str(path))
    assert (await routeway.chat()).status == 200  # the valid route serves
    status, routes = await routeway.get_admin("/routes")
    assert status == 200
    assert any("BackendNotFound" in p and "ghost" in p for p in routes["problems"])
    assert (await routeway.get_admin("/readyz"))[0] == 200
    assert "BackendNotFound" in routeway.log()
    assert await routeway.stop() == 0


async def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    from process_rig import routeway_command

    proc = await asyncio.create_subprocess_exec(
        *routeway_command(),
        "serve",
        "-f",
        str(tmp_path / "nope.yaml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"nope.yaml" in err


async def test_quickstart_with_the_openai_sdk(launch: Launch) -> None:
    """The README's first command: the quick start (built-in mock models), streamed through
    the official SDK."""
    quickstart = Path(__file__).parents[2] / "examples" / "quickstart"
    routeway = await launch("serve", "-f", str(quickstart))
    async with openai.AsyncOpenAI(base_url=f"{routeway.url}/v1", api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    assert await routeway.stop() == 0
