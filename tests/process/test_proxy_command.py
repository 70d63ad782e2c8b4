"""`routeway proxy --config FILE --credentials DIR`, laid out as a pod mounts them.

Covers: the credential from a mounted-Secret directory (Kubernetes' `..data` symlink layout)
is sent upstream as the backend's bearer token (the upstream rejects anything else); a
rotated credential (atomic `..data` swap) is used without restart; a config with an
unsupported schemaVersion is rejected — shown at /routes — while the last good one keeps
serving; no credential value reaches the log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from process_rig import Launch, Upstream, eventually, manifest, write_atomically

from routeway.local import load_local
from routeway.proxyconfig import credential_store_key

REF = "default/upstream-key/api-key"


def mount_secret(folder: Path, generation: str, values: dict[str, str]) -> None:
    """Write a Secret the way the kubelet does: a new timestamped folder, then swap `..data`."""
    data = folder / f"..{generation}"
    data.mkdir(parents=True)
    for key, value in values.items():
        (data / key).write_text(value)
        link = folder / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    tmp = folder / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, folder / "..data")


async def test_proxy_serves_a_rendered_config_with_mounted_credentials(
    tmp_path: Path, launch: Launch, upstream: Upstream
) -> None:
    rendered = load_local([str(_write(tmp_path / "m.yaml", manifest(upstream.url, key="unused")))])
    assert rendered.config is not None and not rendered.problems
    config = tmp_path / "config.json"
    config.write_bytes(rendered.config.to_json())
    credentials = tmp_path / "credentials"
    key_file = credential_store_key(REF)
    mount_secret(credentials, "2026_01", {key_file: "sk-first\n"})

    upstream.expected_key = "sk-first"
    routeway = await launch(
        "proxy", "--config", str(config), "--credentials", str(credentials), "--host", "127.0.0.1"
    )
    response = await routeway.chat()
    assert response.status == 200
    assert upstream.seen[-1]["authorization"] == "Bearer sk-first"
    revision = response.headers["x-routeway-revision"]

    # The Secret is updated: the kubelet swaps `..data`; the next requests use the new key.
    upstream.expected_key = "sk-second"
    mount_secret(credentials, "2026_02", {key_file: "sk-second"})

    async def rotated() -> bool:
        return (await routeway.chat()).status == 200

    await eventually(rotated, what="rotated credential in use")
    assert upstream.seen[-1]["authorization"] == "Bearer sk-second"

    # A config from a newer control plane is rejected; the last good one keeps serving.
    newer = rendered.config.to_document() | {"schemaVersion": 99}
    write_atomically(config, json.dumps(newer))

    async def rejection_shown() -> bool:
        _, routes = await routeway.get_admin("/routes")
        return "schemaVersion" in str(routes)

    await eventually(rejection_shown, what="schemaVersion rejection at /routes")
    response = await routeway.chat()
    assert response.status == 200
    assert response.headers["x-routeway-revision"] == revision
    assert (await routeway.get_admin("/readyz"))[0] == 200

    assert await routeway.stop() == 0
    log = routeway.log()
    assert "schemaVersion 99" in log
    assert "sk-first" not in log and "sk-second" not in log


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
