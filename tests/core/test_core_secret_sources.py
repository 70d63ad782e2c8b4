"""Secrets kept out of plain Git: SOPS-encrypted Secrets, `--assume-secrets`, ExternalSecret and
SealedSecret documents.

Matrix:
- SOPS: a Secret with a `sops` block and `ENC[…]` values validates, referenced or not, in
  `data` or `stringData`; a reference to a key it lacks is still SecretKeyNotFound; a stderr
  note names it; an `ENC[…]` value without the block, and a `sops` block without its `mac`,
  are problems; a document encrypted whole (kind included) is a problem, or one counted skip
  with `--skip-foreign`; render prints the reference only; serve (`load_local`) has no value
  for it, says why (not blocking) and never hands out ciphertext, also for a gateway's client
  keys and for ciphertext that reached a cluster Secret undecrypted (`secret_value`). No output
  of validate, render or serve contains any part of an encrypted value or the SOPS metadata.
- `--assume-secrets` (validate, render; not serve): a missing Secret becomes a stderr note and
  the backend and its route resolve (render shows them), a gateway's missing client-key Secret
  resolves with no key refs (fails closed); without the flag SecretNotFound as before, plus a
  hint; a Secret that is in the files is still checked as written (a missing key, an invalid
  Secret are not assumed away).
- ExternalSecret / SealedSecret, with `--skip-foreign`: each declares its Secret (name from
  target.name or metadata.name; keys from data[].secretKey, the template, encryptedData) so the
  reference resolves and a wrong key is reported; keys not knowable (dataFrom, templateFrom,
  creationPolicy Merge) let any key resolve; creationPolicy None and a manifest target declare
  nothing; without `--skip-foreign` they are foreign documents as before; serve says the value
  is in the cluster only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeway.cli import build_parser
from routeway.credentials import secret_value
from routeway.local import evaluate, load_local
from routeway.manifests import ENCRYPTED_WHOLE, load_manifests
from routeway.resources import Secret
from routeway.secretsources import declared_secret

ROUTEWAY = str(Path(sys.executable).parent / "routeway")

# SOPS's format for one value; these are placeholders (no key decrypts them), each with a marker
# that must never appear in any output.
CIPHER = "ENC[AES256_GCM,data:c2VjcmV0LW1hcmtlci1vbmU=,iv:aXYtbWFya2VyLW9uZS1wYWRkaW5nLXBhZGRpbmctcGFk,tag:dGFnLW1hcmtlci1vbmU=,type:str]"
CIPHER_B64 = "ENC[AES256_GCM,data:YjY0LW1hcmtlci10d28=,iv:aXYtbWFya2VyLXR3by1wYWRkaW5nLXBhZGRpbmctcGFk,tag:dGFnLW1hcmtlci10d28=,type:str]"
MARKERS = (
    "ENC[",
    "c2VjcmV0LW1hcmtlci1vbmU",
    "YjY0LW1hcmtlci10d28",
    "aXYtbWFya2Vy",
    "bWFjLW1hcmtlcg",
    "age1qyqs",
)

SOPS_BLOCK = {
    "age": [
        {
            "recipient": "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
            "enc": "-----BEGIN AGE ENCRYPTED FILE-----\nbm90LWEta2V5\n-----END AGE ENCRYPTED FILE-----\n",
        }
    ],
    "lastmodified": "2025-01-01T00:00:00Z",
    "mac": "ENC[AES256_GCM,data:bWFjLW1hcmtlcg==,iv:aXYtbWFya2VyLW1hYw==,tag:dGFn,type:str]",
    "encrypted_regex": "^(data|stringData)$",
    "version": "3.9.4",
}


def sops_secret(name: str = "openai-key", **values: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": values or {"api-key": CIPHER},
        "sops": SOPS_BLOCK,
    }


def backend(name: str = "a", secret: str = "openai-key", key: str = "api-key") -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelBackend",
        "metadata": {"name": name},
        "spec": {
            "provider": "openai",
            "url": "https://api.example.com/v1",
            "apiKeySecretRef": {"name": secret, "key": key},
        },
    }


def route(backend_name: str = "a", model: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": model},
        "spec": {"model": model, "backends": [{"name": backend_name}]},
    }


def gateway(auth_secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"allowedRoutes": {"namespaces": {"from": "All"}}}
    if auth_secret:
        spec["auth"] = {"apiKeySecretRef": {"name": auth_secret}}
    return {
        "apiVersion": "routeway.dev/v1alpha1",
        "kind": "ModelGateway",
        "metadata": {"name": "default"},
        "spec": spec,
    }


def write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ROUTEWAY, *args], capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    for marker in MARKERS:
        assert marker not in output, f"{marker!r} printed: {output}"
    return proc


def external_secret(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "refreshInterval": "1h",
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
        "data": [{"secretKey": "api-key", "remoteRef": {"key": "ml/openai", "property": "api-key"}}],
    }
    body.update(spec)
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name},
        "spec": body,
    }


def sealed_secret(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"encryptedData": {"api-key": "AgBy3i4OJSWK+PiTySYZZA9rO43cGDEq"}}
    body.update(spec)
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": name},
        "spec": body,
    }


# ---------------------------------------------------------------------------- SOPS


def test_a_sops_secret_validates_referenced_or_not(tmp_path: Path) -> None:
    unreferenced = sops_secret("other", token=CIPHER_B64)
    unreferenced["data"] = unreferenced.pop("stringData")  # the reviewer's case: data, not base64
    path = write(tmp_path / "m.yaml", sops_secret(), unreferenced, backend(), route())
    proc = cli("validate", "-f", path)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    assert (
        "2 SOPS-encrypted Secret(s), checked by key name, values not read: default/openai-key, default/other"
        in proc.stderr
    )
    assert "valid: 4 object(s) in 1 file(s)" in proc.stderr


def test_a_wrong_key_of_a_sops_secret_is_still_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", sops_secret(), backend(key="apikey"), route())
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{path}#2: ModelBackend/a: spec.apiKeySecretRef: SecretKeyNotFound: Secret 'openai-key' has no key 'apikey'",
        f"{path}#3: ModelRoute/chat: spec.backends[0].name: BackendUnresolved: "
        "ModelBackend 'a' has unresolved references (see its status)",
    ]


def test_ciphertext_without_the_sops_block_and_a_block_without_mac_are_problems(tmp_path: Path) -> None:
    stripped = sops_secret("stripped")
    del stripped["sops"]
    stripped_data = sops_secret("stripped-data")
    del stripped_data["sops"]
    stripped_data["data"] = stripped_data.pop("stringData")
    no_mac = sops_secret("no-mac")
    no_mac["sops"] = {k: v for k, v in SOPS_BLOCK.items() if k != "mac"}
    path = write(tmp_path / "m.yaml", stripped, stripped_data, no_mac)
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{path}: Secret/stripped: stringData.api-key: encrypted by SOPS, but the document has no top-level "
        "sops block: keep the file as `sops --encrypt` wrote it",
        f"{path}#2: Secret/stripped-data: data.api-key: encrypted by SOPS, but the document has no top-level "
        "sops block: keep the file as `sops --encrypt` wrote it",
        f"{path}#3: Secret/no-mac: sops.mac: Field required",
    ]


def test_a_document_encrypted_whole_is_reported_or_counted_as_skipped(tmp_path: Path) -> None:
    """`sops --encrypt` without --encrypted-regex encrypts apiVersion and kind too: what it is
    cannot be told, so it is not taken for a Secret and nothing of it is printed."""
    whole = {
        "apiVersion": CIPHER,
        "kind": CIPHER_B64,
        "metadata": {"name": CIPHER},
        "data": {"k": CIPHER},
        "sops": SOPS_BLOCK,
    }
    path = write(tmp_path / "m.yaml", whole)
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        f"{path}: document 1: kind: {ENCRYPTED_WHOLE}: keep apiVersion, kind and metadata"
    )
    skipping = cli("validate", "--skip-foreign", "-f", path)
    assert (skipping.returncode, skipping.stdout) == (0, "")
    assert f"skipped 1 document(s) that are not Routeway's: 1 {ENCRYPTED_WHOLE}" in skipping.stderr


def test_render_names_the_reference_only(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", sops_secret(), backend(), route())
    proc = cli("render", "-f", path, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert [b["credentialRef"] for b in config["backends"]] == ["default/openai-key/api-key"]
    assert [t["backend"] for t in config["routes"][0]["targets"]] == ["default/a"]


def test_serve_has_no_value_for_an_encrypted_secret_and_says_why(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", gateway("client-keys"), sops_secret(), backend(), route())
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump(sops_secret("client-keys", alice=CIPHER, bob=CIPHER_B64))
    )
    loaded = load_local([str(tmp_path)])
    assert not loaded.blocking and loaded.config is not None
    assert loaded.credentials == {}  # neither the backend's key nor any client key
    assert sorted(loaded.config.gateway.client_key_refs) == [
        "default/client-keys/alice",
        "default/client-keys/bob",
    ]
    assert loaded.problems == (
        f"{tmp_path / 'keys.yaml'}: Secret/client-keys: encrypted with SOPS (keys alice, bob): routeway serve "
        "cannot send an encrypted value upstream; decrypt it first (sops --decrypt) and serve the decrypted "
        "copy, kept out of Git",
        f"{path}#2: Secret/openai-key: encrypted with SOPS (key api-key): routeway serve cannot send an "
        "encrypted value upstream; decrypt it first (sops --decrypt) and serve the decrypted copy, kept out of Git",
    )
    for marker in MARKERS:
        assert marker not in "\n".join(loaded.problems)


def test_a_secret_value_is_never_ciphertext() -> None:
    """The one place values are read, for serve and the operator alike."""
    encrypted = Secret.model_validate(sops_secret(**{"api-key": CIPHER, "plain_unencrypted": "visible"}))
    assert encrypted.encrypted and encrypted.key_names == {"api-key", "plain_unencrypted"}
    assert secret_value(encrypted, "api-key") is None
    assert secret_value(encrypted, "plain_unencrypted") is None  # the whole file wants decrypting
    # A SOPS file applied without decryption: the API server stores the ciphertext as data.
    import base64

    applied = Secret.model_validate(
        {"metadata": {"name": "s"}, "data": {"k": base64.b64encode(CIPHER.encode()).decode(), "ok": "b2s="}}
    )
    assert not applied.encrypted
    assert (secret_value(applied, "k"), secret_value(applied, "ok")) == (None, "ok")


# ---------------------------------------------------------------------------- --assume-secrets


def test_without_the_flag_a_missing_secret_is_secret_not_found_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", backend(), route())
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{path}: ModelBackend/a: spec.apiKeySecretRef: SecretNotFound: Secret 'openai-key' not found in namespace default",
        f"{path}#2: ModelRoute/chat: spec.backends[0].name: BackendUnresolved: "
        "ModelBackend 'a' has unresolved references (see its status)",
    ]
    assert (
        "1 referenced Secret(s) are not in the files: default/openai-key (key api-key); "
        "--assume-secrets takes them as existing in the cluster"
    ) in proc.stderr


def test_the_flag_turns_a_missing_secret_into_a_note_and_the_route_resolves(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", backend(), backend("b", key="org"), route(), route("b", "other"))
    proc = cli("validate", "--assume-secrets", "-f", path)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    assert (
        "assumed to exist in the cluster: 1 Secret(s): default/openai-key (keys api-key, org)\n"
        in proc.stderr
    )
    assert "valid: 4 object(s) in 1 file(s)" in proc.stderr

    rendered = cli("render", "--assume-secrets", "-f", path, "-o", "json")
    assert rendered.returncode == 0, rendered.stderr
    config = json.loads(rendered.stdout)
    assert {r["model"]: [t["backend"] for t in r["targets"]] for r in config["routes"]} == {
        "chat": ["default/a"],
        "other": ["default/b"],
    }
    assert "assumed to exist in the cluster" in rendered.stderr


def test_an_assumed_client_key_secret_fails_closed(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", gateway("client-keys"), backend(), route())
    ev = evaluate([path], assume_secrets=True)
    assert ev.problems == ()
    assert [str(m) for m in ev.missing_secrets] == [
        "default/client-keys (client keys)",
        "default/openai-key (key api-key)",
    ]
    ir = ev.translation.gateways[("default", "default")]
    assert (ir.client_key_refs, ir.require_client_key) == ((), True)  # the keys are in the cluster


def test_a_secret_in_the_files_is_checked_as_written_with_the_flag(tmp_path: Path) -> None:
    plain = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai-key"},
        "stringData": {"token": "x"},
    }
    broken = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broken"}, "data": {"k": "!!"}}
    path = write(tmp_path / "m.yaml", plain, broken, backend(), backend("b", secret="broken"), route())
    proc = cli("validate", "--assume-secrets", "-f", path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert f"{path}#2: Secret/broken: data.k: not valid base64 (use stringData for plain text)" in lines
    assert (
        f"{path}#3: ModelBackend/a: spec.apiKeySecretRef: SecretKeyNotFound: Secret 'openai-key' has no key 'api-key'"
        in lines
    )
    assert (
        f"{path}#4: ModelBackend/b: spec.apiKeySecretRef: SecretNotFound: Secret 'broken' not found in namespace default"
        in lines
    )
    assert "assumed" not in proc.stderr


def test_serve_has_no_such_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["validate", "-f", "x", "--assume-secrets"]).assume_secrets is True
    assert parser.parse_args(["render", "-f", "x", "--assume-secrets"]).assume_secrets is True
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "-f", "x", "--assume-secrets"])


# ---------------------------------------------------------------------------- ExternalSecret, SealedSecret


@pytest.mark.parametrize(
    "declaring",
    [
        external_secret("openai-key"),
        external_secret("es", target={"name": "openai-key"}),
        sealed_secret("openai-key"),
        sealed_secret("openai-key", template={"metadata": {"name": "ignored"}}),
    ],
    ids=["es-own-name", "es-target-name", "sealed", "sealed-template-name-is-overridden"],
)
def test_a_declaring_document_resolves_the_reference_and_keeps_key_checks(
    tmp_path: Path, declaring: dict[str, Any]
) -> None:
    good = write(tmp_path / "good.yaml", declaring, backend(), route())
    proc = cli("validate", "--skip-foreign", "-f", good)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    by = f"{declaring['kind']}/{declaring['metadata']['name']}"
    assert (
        f"1 Secret(s) made in the cluster from other documents: default/openai-key ({by}, key api-key)"
        in proc.stderr
    )
    assert "skipped 0 document(s)" in proc.stderr  # read, not skipped

    (tmp_path / "good.yaml").unlink()
    wrong = write(tmp_path / "wrong.yaml", declaring, backend(key="token"), route())
    proc = cli("validate", "--skip-foreign", "-f", wrong)
    assert proc.returncode == 1
    assert "SecretKeyNotFound: Secret 'openai-key' has no key 'token'" in proc.stdout


@pytest.mark.parametrize(
    ("doc", "keys"),
    [
        (external_secret("s"), {"api-key"}),
        (external_secret("s", dataFrom=[{"extract": {"key": "ml/openai"}}]), None),
        (external_secret("s", target={"template": {"data": {"token": "Bearer {{ .api-key }}"}}}), {"token"}),
        (
            external_secret(
                "s", target={"template": {"mergePolicy": "Merge", "data": {"token": "{{ .x }}"}}}
            ),
            {"api-key", "token"},
        ),
        (external_secret("s", target={"template": {"type": "Opaque"}}), {"api-key"}),  # no data: keys kept
        (
            external_secret(
                "s", target={"template": {"templateFrom": [{"configMap": {"name": "t", "items": []}}]}}
            ),
            None,
        ),
        (external_secret("s", target={"creationPolicy": "Merge"}), None),
        (
            sealed_secret("s", template={"data": {"url": 'https://{{ index . "api-key" }}@x'}}),
            {"api-key", "url"},
        ),
        (sealed_secret("s", data="AgBOld"), None),  # the deprecated whole-Secret field
    ],
    ids=[
        "es-data",
        "es-dataFrom",
        "es-template-replaces",
        "es-template-merges",
        "es-template-without-data",
        "es-templateFrom",
        "es-creationPolicy-Merge",
        "sealed-template-data",
        "sealed-deprecated-data",
    ],
)
def test_declared_keys(doc: dict[str, Any], keys: set[str] | None) -> None:
    declared = declared_secret(doc, "f.yaml")
    assert declared is not None and declared.name == "s"
    assert declared.keys == (None if keys is None else frozenset(keys))


@pytest.mark.parametrize(
    "doc",
    [
        external_secret("s", target={"creationPolicy": "None"}),
        external_secret("s", target={"manifest": {"apiVersion": "v1", "kind": "ConfigMap"}}),
        {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {}},
        {"apiVersion": "example.com/v1", "kind": "ExternalSecret", "metadata": {"name": "s"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}},
    ],
    ids=["creationPolicy-None", "manifest-target", "no-name", "other-group", "configmap"],
)
def test_documents_that_declare_no_secret(doc: dict[str, Any]) -> None:
    assert declared_secret(doc, "f.yaml") is None


def test_unknown_keys_let_any_key_resolve(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.yaml",
        external_secret("openai-key", dataFrom=[{"extract": {"key": "ml/openai"}}]),
        backend(key="whatever"),
        route(),
    )
    proc = cli("validate", "--skip-foreign", "-f", path)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout
    assert "default/openai-key (ExternalSecret/openai-key, keys not known)" in proc.stderr


def test_without_skip_foreign_they_stay_foreign(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", external_secret("openai-key"), backend(), route())
    loaded = load_manifests([path])
    assert loaded.declared == () and loaded.foreign == 1
    proc = cli("validate", "-f", path)
    assert proc.returncode == 1
    assert "ExternalSecret/openai-key: kind: unsupported kind 'ExternalSecret'" in proc.stdout
    assert "SecretNotFound" in proc.stdout


def test_a_plain_secret_in_the_files_wins_over_a_declaration(tmp_path: Path) -> None:
    plain = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai-key"},
        "stringData": {"token": "x"},
    }
    path = write(tmp_path / "m.yaml", plain, external_secret("openai-key"), backend(), route())
    proc = cli("validate", "--skip-foreign", "-f", path)
    assert proc.returncode == 1 and "SecretKeyNotFound" in proc.stdout


def test_serve_says_a_declared_secret_has_its_values_in_the_cluster(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.yaml", external_secret("openai-key"), backend(), route(), gateway("client-keys")
    )
    (tmp_path / "sealed.yaml").write_text(
        yaml.safe_dump(sealed_secret("client-keys", encryptedData={"alice": "AgA"}))
    )
    loaded = load_local([str(tmp_path)], skip_foreign=True)
    assert not loaded.blocking and loaded.config is not None and loaded.credentials == {}
    assert loaded.problems == (
        f"{tmp_path / 'sealed.yaml'}: SealedSecret/client-keys: makes Secret default/client-keys in the cluster only: "
        "routeway serve has no value for key alice; give it a plain Secret of that name, kept out of Git",
        f"{path}: ExternalSecret/openai-key: makes Secret default/openai-key in the cluster only: routeway serve has no "
        "value for key api-key; give it a plain Secret of that name, kept out of Git",
    )
