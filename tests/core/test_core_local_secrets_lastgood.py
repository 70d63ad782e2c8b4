"""`routeway serve`'s loads keep a Secret's last good version (issue 14 item 3, the Secret case).

A save that breaks a key Secret — `data` that is not base64, or its file mid-edit and not
parsing — used to make every backend and client using it SecretNotFound, so their routes
answered 503 and their keys 401, although the Secret had a good previous version. Matrix:
{upstream-key, gateway-keys, client-key Secret} x {data not base64, file that does not parse}; and
the neighbours that must still apply: a Secret deleted from the files, or a key removed from
it, is a revocation; a first load has no memory, so nothing is kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routeway.local import LocalLoad, load_local
from routeway.proxyconfig import hash_client_key

SECRETS = """\
apiVersion: v1
kind: Secret
metadata: {name: up-key, namespace: default}
data: {apiKey: c2stdXBzdHJlYW0=}
---
apiVersion: v1
kind: Secret
metadata: {name: client-key, namespace: default}
stringData: {key: rw-client-key}
---
apiVersion: v1
kind: Secret
metadata: {name: gateway-keys, namespace: default}
stringData: {admin: rw-admin-key}
"""

REST = """\
apiVersion: routeway.dev/v1alpha1
kind: ModelGateway
metadata: {name: default, namespace: default}
spec:
  auth: {apiKeySecretRef: {name: gateway-keys}}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {name: upstream, namespace: default}
spec:
  provider: openai
  url: http://127.0.0.1:9/v1
  apiKeySecretRef: {name: up-key, key: apiKey}
---
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat, namespace: default}
spec:
  model: chat
  backends: [{name: upstream}]
---
apiVersion: routeway.dev/v1alpha1
kind: ModelClient
metadata: {name: team, namespace: default}
spec:
  keySecretRef: {name: client-key, key: key}
"""

BREAKS = {
    "upstream key not base64": SECRETS.replace("c2stdXBzdHJlYW0=", "not base64 !!"),
    "gateway keys not base64": SECRETS.replace(
        "stringData: {admin: rw-admin-key}", "data: {admin: 'not base64 !!'}"
    ),
    "client key not base64": SECRETS.replace(
        "stringData: {key: rw-client-key}", "data: {key: 'not base64 !!'}"
    ),
    "file does not parse": SECRETS + "  broken: [unclosed\n",
}


def first_load(tmp_path: Path) -> LocalLoad:
    (tmp_path / "secrets.yaml").write_text(SECRETS)
    (tmp_path / "rest.yaml").write_text(REST)
    load = load_local([str(tmp_path)])
    assert load.problems == ()
    return load


def serves_everything(load: LocalLoad) -> None:
    assert load.config is not None and not load.blocking
    assert [b.id for b in load.config.backends] == ["default/upstream"]
    assert [t.backend for r in load.config.routes for t in r.targets] == ["default/upstream"]
    assert load.credentials["default/up-key/apiKey"] == "sk-upstream"
    hashed = {hash_client_key("rw-client-key"), hash_client_key("rw-admin-key")}
    assert hashed <= set(load.credentials.values())


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_secret_serves_its_last_good_version(tmp_path: Path, broken: str) -> None:
    first = first_load(tmp_path)
    serves_everything(first)
    (tmp_path / "secrets.yaml").write_text(BREAKS[broken])
    second = load_local([str(tmp_path)], memory=first.memory)
    serves_everything(second)
    assert any("last good version" in p for p in second.problems)
    assert not any("SecretNotFound" in p for p in second.problems)
    # and a third load, still broken, keeps it (the memory carries the Secret on)
    third = load_local([str(tmp_path)], memory=second.memory)
    serves_everything(third)


def test_a_deleted_secret_is_a_revocation_and_a_removed_upstream_key_is_kept(tmp_path: Path) -> None:
    """Deleting a Secret revokes what it held; a Secret that loses a key the gateway sends is a
    bad new version of it (test_core_local_secret_lastgood.py holds the client-key case: a
    client key removed from its Secret is revoked)."""
    first = first_load(tmp_path)
    (tmp_path / "secrets.yaml").write_text(SECRETS.split("---\n")[1])  # up-key deleted
    second = load_local([str(tmp_path)], memory=first.memory)
    assert second.config is not None and second.config.backends == ()
    assert any("SecretNotFound" in p for p in second.problems)
    (tmp_path / "secrets.yaml").write_text(SECRETS.replace("{apiKey: c2stdXBzdHJlYW0=}", "{other: c2s=}"))
    third = load_local([str(tmp_path)], memory=first.memory)
    serves_everything(third)
    assert any("last good version" in p for p in third.problems)


def test_a_first_load_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text(BREAKS["upstream key not base64"])
    (tmp_path / "rest.yaml").write_text(REST)
    load = load_local([str(tmp_path)])
    assert load.config is not None and load.config.backends == ()
