"""The file config source without processes: credentials formats, change detection, the
apply loop against the real runtime.

Covers: credentials from a directory (store keys; dotfiles and `..data` ignored; other names
skipped), from JSON (refs or store keys), from YAML and from a Secret manifest (data and
stringData); errors name the file and never quote a value; two same-size saves within one
timestamp tick are still seen as a change; `ConfigFileSource.load` rejects a missing file,
bad JSON and an unsupported schemaVersion; `ConfigApplier` applies once per distinct
config+credentials, logs a rejection once, and keeps the last good config; each load and
rejection is logged once in the whole process (the runtime it feeds logs neither), and a
worker's applier logs nothing above debug.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
from routeway_proxy.config_apply import ConfigApplier
from routeway_proxy.config_file import (
    ConfigFileSource,
    CredentialsError,
    FileDigests,
    list_files,
    read_credentials,
)
from routeway_proxy.runtime import ProxyRuntime

from routeway.configupdate import ConfigLoaded, ConfigRejected
from routeway.proxyconfig import ProxyConfig, parse_proxy_config

REF = "team-a/openai/api-key"
STORE_KEY = "team-a_openai_api-key"


def sample_config(model: str = "chat") -> ProxyConfig:
    return parse_proxy_config(
        {
            "schemaVersion": 1,
            "gateway": {"namespace": "default", "name": "default", "maxBodyBytes": 1024},
            "backends": [
                {
                    "id": "team-a/up",
                    "namespace": "team-a",
                    "name": "up",
                    "provider": "openai",
                    "url": "http://127.0.0.1:9/v1",
                    "credentialRef": REF,
                    "timeouts": {"connect": 1, "firstByte": 1, "idle": 1},
                    "queueTimeout": 1,
                    "outlierDetection": {"consecutiveFailures": 5, "baseEjection": 1, "maxEjection": 2},
                }
            ],
            "routes": [
                {
                    "id": "team-a/chat",
                    "namespace": "team-a",
                    "name": "chat",
                    "model": model,
                    "targets": [{"backend": "team-a/up", "model": "m", "weight": 1}],
                    "retries": {"attempts": 0},
                }
            ],
        }
    ).with_revision()


def test_credentials_directory_like_a_mounted_secret(tmp_path: Path) -> None:
    (tmp_path / "..2026_01").mkdir()
    (tmp_path / "..2026_01" / STORE_KEY).write_text("sk-1\n")
    (tmp_path / "..data").symlink_to("..2026_01")
    (tmp_path / STORE_KEY).symlink_to(f"..data/{STORE_KEY}")
    (tmp_path / ".swp").write_text("editor noise")
    (tmp_path / "README").write_text("not a store key")
    assert read_credentials(str(tmp_path)) == {REF: "sk-1"}
    assert list_files(str(tmp_path), recursive=False) == [str(tmp_path / "README"), str(tmp_path / STORE_KEY)]


def test_credentials_files(tmp_path: Path) -> None:
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({REF: "sk-1", "b_c_d": "sk-2"}))
    assert read_credentials(str(as_json)) == {REF: "sk-1", "b/c/d": "sk-2"}

    as_secret = tmp_path / "secret.yaml"
    encoded = base64.b64encode(b"sk-3\n").decode()
    as_secret.write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\ndata: {{{STORE_KEY}: {encoded}}}\n"
        "stringData: {b_c_d: sk-4}\n"
    )
    assert read_credentials(str(as_secret)) == {REF: "sk-3", "b/c/d": "sk-4"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "a: [sk-secret-value\n", "invalid YAML at line"),
        ("bad.json", '{"a/b/c": sk-secret-value}', "invalid JSON at line 1"),
        ("list.yaml", "- sk-secret-value\n", "expected a mapping"),
        ("key.yaml", "nounderscores: sk-secret-value\n", "neither a credential ref"),
        ("value.yaml", "a_b_c: [sk-secret-value]\n", "must be strings"),
    ],
)
def test_credentials_errors_never_quote_values(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CredentialsError) as err:
        read_credentials(str(path))
    assert message in str(err.value) and name in str(err.value)
    assert "sk-secret-value" not in str(err.value)


def test_same_size_rewrite_within_one_tick_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("aaaa")
    digests = FileDigests()
    before = digests.digest(str(path))
    stat = os.stat(path)
    path.write_text("bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as if saved in the same tick
    assert digests.digest(str(path)) != before
    assert digests.digest(str(tmp_path / "missing")) is None


def test_config_file_rejections(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    source = ConfigFileSource(str(config))
    missing = source.load()
    assert isinstance(missing, ConfigRejected) and "cannot read" in missing.errors[0]

    config.write_text("{not json")
    assert isinstance(source.load(), ConfigRejected)

    config.write_text(json.dumps(sample_config().to_document() | {"schemaVersion": 2}))
    newer = source.load()
    assert isinstance(newer, ConfigRejected) and "schemaVersion 2" in newer.errors[0]

    config.write_text(json.dumps(sample_config().to_document() | {"routes": "nope"}))
    invalid = source.load()
    assert isinstance(invalid, ConfigRejected) and invalid.errors[0].startswith(f"{config}: routes")

    # a hand-written config refuses a query or fragment (it would break the upstream path),
    # without quoting the URL; userinfo stays possible there (Basic auth, redacted at /config)
    for url, hint in (
        ("http://127.0.0.1:9/v1?key=sk-PLANTED", "query string"),
        ("http://127.0.0.1:9/v1#sk-PLANTED", "query string"),
        ("http://user:pw@127.0.0.1:9/v1?key=sk-PLANTED", "query string"),
    ):
        document = sample_config().to_document()
        document["backends"][0]["url"] = url
        config.write_text(json.dumps(document))
        bad_url = source.load()
        assert isinstance(bad_url, ConfigRejected), url
        assert bad_url.errors[0].startswith(f"{config}: backends.0.url") and hint in bad_url.errors[0]
        assert "apiKeySecretRef" in bad_url.errors[0] and "PLANTED" not in " ".join(bad_url.errors)

    config.write_bytes(sample_config().to_json())
    (tmp_path / "creds.json").write_text(json.dumps({REF: "sk-1"}))
    loaded = ConfigFileSource(str(config), str(tmp_path / "creds.json")).load()
    assert isinstance(loaded, ConfigLoaded) and loaded.credentials == {REF: "sk-1"}


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record of the proxy's loggers: the apply loop's must be the only ones."""
    return [r for r in caplog.records if r.name.startswith("routeway.proxy")]


async def test_applier_applies_once_and_keeps_last_good(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    runtime = ProxyRuntime()
    applier = ConfigApplier(runtime, announce=True)
    good = ConfigLoaded(sample_config(), {REF: "sk-1"}, "f")
    applier.handle(good)
    applier.handle(ConfigLoaded(sample_config(), {REF: "sk-1"}, "f"))  # same again: nothing to do
    assert runtime.config == good.config and applier.loaded_once
    assert sum("loaded from f" in r.getMessage() for r in ours(caplog)) == 1

    bad = ConfigRejected("f", ("f: broken",))
    applier.handle(bad)
    applier.handle(ConfigRejected("f", ("f: broken",)))
    assert runtime.config == good.config
    assert sum("rejected" in r.getMessage() for r in ours(caplog)) == 1

    applier.handle(ConfigLoaded(sample_config(), {REF: "sk-2"}, "f"))  # rotated credential
    assert sum("loaded from f" in r.getMessage() for r in ours(caplog)) == 2
    assert "sk-1" not in caplog.text and "sk-2" not in caplog.text


async def test_each_load_and_rejection_is_logged_once_in_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="routeway.proxy")
    config = sample_config()
    ConfigApplier(ProxyRuntime(), announce=True).handle(ConfigLoaded(config, {REF: "sk-1"}, "f"))
    assert [r.levelno for r in ours(caplog) if config.revision in r.getMessage()] == [logging.INFO]
    caplog.clear()
    applier = ConfigApplier(ProxyRuntime(), announce=True)
    applier.handle(ConfigRejected("f", ("f: broken",)))
    assert [r.levelno for r in ours(caplog) if "f: broken" in r.getMessage()] == [logging.WARNING]
    caplog.clear()
    worker = ConfigApplier(ProxyRuntime(), announce=False)  # the supervisor logs for the group
    worker.handle(ConfigLoaded(config, {REF: "sk-1"}, "f"))
    worker.handle(ConfigRejected("f", ("f: broken",)))
    assert {r.levelno for r in ours(caplog)} == {logging.DEBUG} and len(ours(caplog)) == 2


async def test_a_credential_that_is_not_unicode_text_is_a_rejection(caplog: pytest.LogCaptureFixture) -> None:
    """YAML accepts "\\udce9" (a lone surrogate) in a Secret's stringData; no header, digest or
    worker message can carry it. It used to raise in the apply loop, which reopened its source
    every second; now it is a rejection naming the credential, and the last good config stays."""
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    runtime = ProxyRuntime()
    applier = ConfigApplier(runtime, announce=True)
    good = ConfigLoaded(sample_config(), {REF: "sk-1"}, "f")
    applier.handle(good)
    applier.handle(ConfigLoaded(sample_config(), {REF: "sk-\udce9"}, "f"))
    assert runtime.config == good.config
    rejection = runtime.last_rejection
    assert rejection is not None and rejection.errors == (f"f: credential {REF}: not valid Unicode text",)
