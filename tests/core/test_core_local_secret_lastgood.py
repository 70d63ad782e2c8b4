"""`routeway serve` keeps a Secret's last good version (routeway.local_memory), as the load
function sees it: the credentials served and the problems reported after each save.

Covers: a Secret whose new version does not parse (`data:` not base64, a value that is not a
string), lacks the key a backend uses, or sits in a file that stops parsing keeps its last good
value and is reported; a rotation (a new good value) and a coordinated key rename (Secret and
backend in one save) take effect; a deleted Secret is gone; a Secret with no last good version
is taken as written; a client key removed from its Secret is revoked, not kept.
"""

from __future__ import annotations

from pathlib import Path

from routeway.local import LocalLoad, load_local

LAST_GOOD = "serving the last good version"
REF = "default/upstream-key/api-key"

FILES = """\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: upstream, namespace: default}}
spec:
  provider: openai
  url: http://127.0.0.1:9/v1
  model: m
  apiKeySecretRef: {{name: upstream-key, key: {key}}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: chat, namespace: default}}
spec: {{model: chat, backends: [{{name: upstream}}]}}
"""


def secret(body: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: upstream-key, namespace: default}}\n{body}\n"


def save(tmp_path: Path, secret_text: str | None, key: str = "api-key") -> None:
    (tmp_path / "main.yaml").write_text(FILES.format(key=key))
    path = tmp_path / "secret.yaml"
    if secret_text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(secret_text)


def reload(tmp_path: Path, before: LocalLoad | None) -> LocalLoad:
    load = load_local([str(tmp_path)], memory=before.memory if before is not None else None)
    assert load.config is not None and not load.blocking
    return load


def served_backends(load: LocalLoad) -> list[str]:
    assert load.config is not None
    return [b.id for b in load.config.backends]


def secret_problems(load: LocalLoad) -> list[str]:
    return [p for p in load.problems if "Secret/upstream-key" in p and LAST_GOOD in p]


def test_a_broken_secret_keeps_its_last_good_value_and_a_rotation_applies(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, None)
    assert load.credentials[REF] == "sk-one" and load.problems == ()

    for broken, why in (
        ("data: {api-key: 'not base64 !'}", "does not parse"),
        ("stringData: {other: sk-x}", "lacks key api-key, needed by ModelBackend default/upstream"),
        ("stringData: {api-key: [sk-x]}", "does not parse"),
    ):
        save(tmp_path, secret(broken))
        load = reload(tmp_path, load)
        assert load.credentials[REF] == "sk-one", broken
        assert served_backends(load) == ["default/upstream"]
        reported = secret_problems(load)
        assert len(reported) == 1 and why in reported[0], (broken, load.problems)
        assert "sk-x" not in str(load.problems) and "sk-one" not in str(load.problems)

    save(tmp_path, secret("stringData: {api-key: sk-two}"))  # a rotation: the new value serves
    load = reload(tmp_path, load)
    assert load.credentials[REF] == "sk-two" and load.problems == ()
    save(tmp_path, secret("stringData: {other: sk-x}"))
    load = reload(tmp_path, load)
    assert load.credentials[REF] == "sk-two"  # the last good value is the rotated one


def test_a_secret_file_that_stops_parsing_keeps_its_last_good_value(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, None)
    save(tmp_path, "apiVersion: v1\nkind: Secret\nstringData: {api-key: [\n")
    load = reload(tmp_path, load)
    assert load.credentials[REF] == "sk-one"
    assert any("malformed YAML" in p for p in load.problems) and secret_problems(load)


def test_a_key_renamed_in_the_secret_and_the_backend_together_applies(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, None)
    save(tmp_path, secret("stringData: {token: sk-two}"), key="token")
    load = reload(tmp_path, load)
    assert load.credentials == {"default/upstream-key/token": "sk-two"} and load.problems == ()


def test_a_deleted_secret_is_gone(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, None)
    save(tmp_path, None)
    load = reload(tmp_path, load)
    assert REF not in load.credentials and served_backends(load) == []
    assert any("SecretNotFound" in p for p in load.problems) and not secret_problems(load)
    save(tmp_path, secret("data: {api-key: 'not base64 !'}"))  # back, but broken: nothing to keep
    load = reload(tmp_path, load)
    assert REF not in load.credentials and not secret_problems(load)


def test_a_secret_with_no_last_good_version_is_taken_as_written(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {other: sk-x}"))
    load = reload(tmp_path, None)
    assert served_backends(load) == [] and any("SecretKeyNotFound" in p for p in load.problems)
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, load)
    assert load.credentials[REF] == "sk-one" and served_backends(load) == ["default/upstream"]


def test_a_key_the_last_good_version_lacked_too_does_not_hold_a_rotation_back(tmp_path: Path) -> None:
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    load = reload(tmp_path, None)
    # the backend now asks for a key neither version has (its problem, not the Secret's), and
    # the Secret is rotated in the same save: the backend keeps its last good version, with
    # the rotated value
    save(tmp_path, secret("stringData: {api-key: sk-two}"), key="token")
    load = reload(tmp_path, load)
    assert load.credentials[REF] == "sk-two" and served_backends(load) == ["default/upstream"]
    assert not secret_problems(load) and any("SecretKeyNotFound" in p for p in load.problems)


def test_a_client_key_removed_from_its_secret_is_revoked_not_kept(tmp_path: Path) -> None:
    client = (
        "apiVersion: routeway.dev/v1alpha1\nkind: ModelGateway\nmetadata: {name: default, namespace: default}\n"
        "spec: {auth: {apiKeySecretRef: {name: gw-keys}}}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: gw-keys, namespace: default}\n"
        "stringData: {ops: sk-ops-1}\n---\n"
        "apiVersion: routeway.dev/v1alpha1\nkind: ModelClient\nmetadata: {name: team, namespace: default}\n"
        "spec: {keySecretRef: {name: team-key, key: key}}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: team-key, namespace: default}\n"
    )
    save(tmp_path, secret("stringData: {api-key: sk-one}"))
    (tmp_path / "client.yaml").write_text(client + "stringData: {key: sk-team-1}\n")
    load = reload(tmp_path, None)
    assert "default/team-key/key" in load.credentials, load.problems  # (as its hash)
    (tmp_path / "client.yaml").write_text(client + "stringData: {other: sk-team-2}\n")
    load = reload(tmp_path, load)
    assert "default/team-key/key" not in load.credentials
    assert not [p for p in load.problems if LAST_GOOD in p]
