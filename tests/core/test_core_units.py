"""Small pure pieces: durations, ProxyConfig parsing and versioning, credential plumbing,
manifest loading details (List kind, stdin, directories, hidden files)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from core_factories import backend, gateway, route, secret

from routeway.credentials import hash_client_key, lookup_in, resolve_credentials, secret_value
from routeway.durations import parse_duration
from routeway.manifests import load_manifests
from routeway.proxyconfig import (
    UnsupportedSchemaVersion,
    credential_ref_from_store_key,
    credential_store_key,
    parse_proxy_config,
)
from routeway.render import render_all
from routeway.resources import Secret
from routeway.translate import Inventory, translate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1s", "1d", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def config_for(*objects):  # type: ignore[no-untyped-def]
    return render_all(translate(Inventory.from_objects(objects)))[("default", "default")]


def test_revision_is_stable_and_content_addressed() -> None:
    base = [gateway(), backend("a"), backend("b"), route("chat", [("a", 90), ("b", 10)])]
    one, two = config_for(*base), config_for(*reversed(base))
    assert one.revision == two.revision and one.to_json() == two.to_json()
    changed = config_for(gateway(), backend("a"), backend("b"), route("chat", [("a", 80), ("b", 20)]))
    assert changed.revision != one.revision


def test_proxy_config_round_trip_and_unknown_version() -> None:
    config = config_for(gateway(), backend("a"), route("chat"))
    assert parse_proxy_config(config.to_json()) == config
    doc = config.to_document()
    doc["schemaVersion"] = 99
    with pytest.raises(UnsupportedSchemaVersion, match="schemaVersion 99 is not supported"):
        parse_proxy_config(doc)
    with pytest.raises(ValueError):
        parse_proxy_config(b"[1, 2]")


def test_credential_store_keys_round_trip() -> None:
    ref = "ml-team/vllm.creds/api_key-1"
    assert credential_store_key(ref) == "ml-team_vllm.creds_api_key-1"
    assert credential_ref_from_store_key(credential_store_key(ref)) == ref


def test_credentials_resolve_only_what_config_names() -> None:
    s = secret("creds", **{"api-key": "sk-1", "unused": "nope"})
    keys = Secret.model_validate(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "client"}, "data": {"a": "c2stYQ==\n"}}
    )
    config = config_for(
        gateway(auth={"apiKeySecretRef": {"name": "client"}}),
        s,
        keys,
        backend("a", apiKeySecretRef={"name": "creds", "key": "api-key"}),
        route("chat"),
    )
    creds = resolve_credentials(config, lookup_in([s, keys]))
    # a backend credential is sent upstream: its value; a client key is only compared: its hash
    assert creds == {"default/creds/api-key": "sk-1", "default/client/a": hash_client_key("sk-a")}


def test_secret_with_bad_base64_is_invalid_and_never_half_used() -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "%%%"}}
    with pytest.raises(ValueError, match="not valid base64"):
        Secret.model_validate(body)
    # values that reach secret_value unvalidated still never decode to junk
    unchecked = Secret.model_construct(data={"k": "%%%"}, string_data={})
    assert secret_value(unchecked, "k") is None
    assert secret_value(unchecked, "missing") is None


def test_list_kind_stdin_and_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: routeway.dev/v1alpha1, kind: ModelBackend, metadata: {name: a}, spec: {provider: mock}}\n"
    )
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("ignored")
    stdin = io.StringIO(
        "apiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\nmetadata: {name: b}\nspec: {provider: mock}\n"
    )
    result = load_manifests([str(tmp_path), "-"], stdin=stdin)
    assert result.problems == ()
    assert sorted(o.name for o in result.objects) == ["a", "b"]
    assert result.files == (str(tmp_path / "sub" / "list.yaml"), "-")


def test_invalid_named_object_is_remembered_as_invalid(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "apiVersion: routeway.dev/v1alpha1\nkind: ModelBackend\nmetadata: {name: a, namespace: ml}\nspec: {provider: nope}\n"
    )
    result = load_manifests([str(tmp_path)])
    assert [str(k) for k in result.invalid] == ["ModelBackend/a"]
    assert result.problems[0].field == "spec.provider"


def test_gc_paused_restores_the_collector_state() -> None:
    import gc

    from routeway.gcpause import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block must not re-enable it early
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector disabled by someone else stays disabled
    finally:
        gc.enable()
