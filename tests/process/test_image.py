"""The built image, run with buildah as the chart runs it: user 10001, nothing written to it.

`scripts/test-image` builds the image (scripts/build-image) and runs this module with
ROUTEWAY_IMAGE set; CI does so after the main suite. Without ROUTEWAY_IMAGE it is skipped, as
the suite's default run builds no image.

Covers: the image's config (numeric USER equal to the chart's runAsUser/runAsGroup,
ENTRYPOINT `routeway`, default command `operator`); `routeway operator --help`; `routeway
proxy` from the image serving a config rendered by `routeway render` with credentials mounted
as a Secret volume is: the official OpenAI client's chat completion goes through it to a real
upstream on 127.0.0.1 that accepts only the mounted key, and the quick start's mock route
answers; no file of the image changed while it served (the chart's root file system is
read-only); what the image must not hold (pip, a compiler, tests, benchmarks, sources).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from image_rig import IMAGE, SKIP_WITHOUT_IMAGE, USER, buildah, files_of, new_container, run_args
from process_rig import LISTENING, Upstream, manifest

from routeway.local import load_local
from routeway.proxyconfig import credential_store_key

ROOT = Path(__file__).resolve().parents[2]
pytestmark = SKIP_WITHOUT_IMAGE


@pytest.fixture
def container() -> Iterator[str]:
    name = new_container()
    yield name
    buildah("rm", name, check=False)


def test_image_config_matches_the_chart() -> None:
    config = yaml.safe_load(buildah("inspect", "--type", "image", IMAGE).stdout)["OCIv1"]["config"]
    values = yaml.safe_load((ROOT / "charts/routeway/values.yaml").read_text())
    context = values["securityContext"]
    assert config["User"] == f"{context['runAsUser']}:{context['runAsGroup']}" == USER
    assert config["Entrypoint"] == ["routeway"]
    assert config["Cmd"] == ["operator"]
    # nothing of the build machine: its pip settings stay in the builder stage
    assert not [entry for entry in config.get("Env", []) if entry.startswith("PIP_")]


def test_the_image_trusts_only_debians_certificate_authorities(container: str) -> None:
    """The build trusts the build machine's CAs (a TLS-intercepting proxy's among them); the
    image the gateway runs in must not: its TLS to upstreams carries their API keys."""
    probe = (
        "import pathlib;"
        "bundle = pathlib.Path('/etc/ssl/certs/ca-certificates.crt').read_text();"
        "print(bundle.count('BEGIN CERTIFICATE'));"
        "print(len(list(pathlib.Path('/usr/share/ca-certificates/mozilla').glob('*.crt'))))"
    )
    result = subprocess.run(
        run_args(container, "python", "-c", probe), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    in_bundle, shipped_by_debian = (int(line) for line in result.stdout.split())
    assert in_bundle == shipped_by_debian > 100


def test_operator_help_runs_as_the_charts_user(container: str) -> None:
    result = subprocess.run(
        run_args(container, "routeway", "operator", "--help"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--peering NAME" in result.stdout
    assert "outside a cluster" in result.stdout


def test_the_image_holds_only_what_runs(container: str) -> None:
    probe = (
        "import importlib.util, shutil, sys, pathlib;"
        "print([m for m in ('pip', 'setuptools', 'pytest', 'tests', 'bench') if importlib.util.find_spec(m)]);"
        "print([c for c in ('gcc', 'cc', 'pip', 'pip3', 'apt-get') if shutil.which(c)]);"
        "print(sorted(p.name for p in pathlib.Path(sys.prefix).rglob('*.py') if p.parent.name == 'routeway')[:1])"
    )
    result = subprocess.run(
        run_args(container, "python", "-c", probe), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules, commands, routeway = result.stdout.splitlines()
    assert modules == "[]"
    # apt-get comes with the Debian base; nothing that builds or installs Python code does
    assert commands in ("[]", "['apt-get']")
    assert routeway == "['__init__.py']"  # the installed package itself is there


async def test_proxy_from_the_image_serves_a_rendered_config(
    container: str, tmp_path: Path, upstream: Upstream
) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "examples" / "quickstart", manifests)
    (manifests / "upstream.yaml").write_text(manifest(upstream.url, public="upstream-chat", key="unused"))
    rendered = load_local([str(manifests)])
    assert rendered.config is not None and not rendered.problems
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_bytes(rendered.config.to_json())
    secret = tmp_path / "secret"  # a Secret volume: one file per key
    secret.mkdir()
    (secret / credential_store_key("default/upstream-key/api-key")).write_text("sk-mounted")
    for path in (config, secret, *config.iterdir(), *secret.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    upstream.expected_key = "sk-mounted"

    volumes = (f"{config}:/etc/routeway/config:ro", f"{secret}:/etc/routeway/credentials:ro")
    before = files_of(container, skip=("etc/routeway",))
    log_path = tmp_path / "proxy.log"
    log = log_path.open("wb")
    proxy = await asyncio.create_subprocess_exec(
        *run_args(container, "routeway", "proxy", "--config", "/etc/routeway/config/config.json",
                  "--credentials", "/etc/routeway/credentials", "--host", "127.0.0.1",
                  "--port", "0", "--admin-port", "0", "--workers", "1",
                  volumes=volumes),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        port = await _until_ready(proxy, log_path)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answer = await client.chat.completions.create(
            model="upstream-chat", messages=[{"role": "user", "content": "hello"}]
        )
        assert answer.choices[0].message.content
        assert upstream.seen[-1]["authorization"] == "Bearer sk-mounted"
        mocked = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert mocked.choices[0].message.content
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)  # buildah run does not relay signals; the group gets it
        try:
            await asyncio.wait_for(proxy.wait(), 30)
        except TimeoutError:
            os.killpg(proxy.pid, signal.SIGKILL)
            await proxy.wait()
        log.close()
    after = files_of(container, skip=("etc/routeway",))
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert changed == []
    assert "sk-mounted" not in log_path.read_text(errors="replace")


async def _until_ready(proxy: asyncio.subprocess.Process, log: Path) -> int:
    """The client port, once the admin port's /readyz says ready (ports read from the log)."""
    deadline = time.monotonic() + 60  # a cold interpreter in a chroot on a busy machine
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            text = await asyncio.to_thread(log.read_bytes)
            if proxy.returncode is not None:
                pytest.fail(f"the proxy exited with {proxy.returncode}: {text.decode(errors='replace')}")
            listening = LISTENING.search(text)
            if listening:
                port, admin = int(listening[1]), int(listening[2])
                try:
                    async with session.get(f"http://127.0.0.1:{admin}/readyz") as response:
                        if response.status == 200:
                            return port
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.1)
    text = await asyncio.to_thread(log.read_bytes)
    pytest.fail(f"the proxy was not ready within 60 s: {text.decode(errors='replace')}")
