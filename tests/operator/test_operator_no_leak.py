"""Planted keys, everywhere the operator writes or logs (issue 14, "Prove it"): the real kopf
operator against kmock.

An upstream key (a ModelBackend's `apiKeySecretRef` value), a ModelClient key and a gateway
`auth` key — each rotated once to a second planted value — are searched for in every form
(as they are, their distinctive middle, base64 standard and URL-safe, URL-encoded, hex,
JSON-escaped, SHA-256 hex) across:

- every log record of the run at DEBUG (the root logger: kopf's, aiohttp's,
  kubernetes_asyncio's and the operator's own), with its arguments and traceback;
- every object kmock holds at the end except Secrets — statuses of gateways, routes,
  backends and clients, the ConfigMaps, the proxy Deployment and Service, the rollout's
  ControllerRevisions, every Event;
- every request kmock received (URL, headers and body), the writes of the gateway's
  credentials Secret without their values;
- that Secret's metadata (annotations, labels) — its values must be the upstream key (the
  proxy sends it) and the client and gateway keys as `sha256:` hashes, nothing else.

The mix: a gateway with `auth`, two ModelClients (one claiming the other's key value, one
whose key Secret lacks the key), a backend with a credential, a route rolled out by an edit
of its backend, every key Secret rotated, a client key Secret deleted. The operator never
writes to a user's Secret.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from key_search import find_leaks, forms, planted
from kmock_ext import RoutewayEmulator
from operator_factories import backend, client, condition, create, gateway, get, patch, route, secret, seed
from rig import ROUTES, eventually, running_operator, settled
from rollout_standin import StandInProxies

UPSTREAM_KEYS = (planted("opupone"), planted("opuptwo"))
CLIENT_KEYS = (planted("opclone"), planted("opcltwo"))
GATEWAY_KEYS = (planted("opgwone"), planted("opgwtwo"))
ALL_KEYS = (*UPSTREAM_KEYS, *CLIENT_KEYS, *GATEWAY_KEYS)
USER_SECRETS = ("gw-keys", "upstream-key", "team-key", "twin-key")
CREDENTIALS = "routeway-gw-credentials"


def leaks(documents: dict[str, str], keys: tuple[str, ...] = ALL_KEYS) -> list[tuple[str, str, str]]:
    return find_leaks(documents, keys)


class Collect(logging.Handler):
    """Every record, formatted with its arguments and traceback (what any handler could write)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + f" {record.__dict__}")


@pytest.fixture
def debug_log() -> Iterator[Collect]:
    root = logging.getLogger()
    handler = Collect()
    touched = ["", "kopf", "aiohttp", "kubernetes_asyncio", "routeway", "asyncio"]
    levels = {name: logging.getLogger(name).level for name in touched}
    for name in touched:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def world(version: int) -> list[dict[str, Any]]:
    canary = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    return [
        secret("gw-keys", admin=GATEWAY_KEYS[version]),
        secret("upstream-key", **{"api-key": UPSTREAM_KEYS[version]}),
        secret("team-key", **{"api-key": CLIENT_KEYS[version]}),
        secret("twin-key", token=CLIENT_KEYS[version]),  # the same value under another client
        gateway("gw", auth={"apiKeySecretRef": {"name": "gw-keys"}}),
        backend(
            "upstream",
            url="http://vllm.ml.svc:8000/v1",
            apiKeySecretRef={"name": "upstream-key", "key": "api-key"},
        ),
        route("chat", "chat", {"upstream": 1}, strategy=canary),
        client("team", "team-key", models=["chat"]),
        client("twin", "twin-key", key="token"),
        client("keyless", "team-key", key="no-such-key"),
    ]


def credentials(kmock: RoutewayEmulator) -> dict[str, str]:
    creds = get(kmock, "v1/secrets", CREDENTIALS) or {}
    values = {k: base64.b64decode(v).decode() for k, v in (creds.get("data") or {}).items()}
    return values | dict(creds.get("stringData") or {})


def without_values(secret: dict[str, Any]) -> dict[str, Any]:
    """A Secret's body without its values (`data`, `stringData`), keeping their keys."""
    return {
        k: sorted(v) if k in ("data", "stringData") and isinstance(v, dict) else v for k, v in secret.items()
    }


def rollout_phase(kmock: RoutewayEmulator) -> str | None:
    return ((get(kmock, ROUTES, "chat") or {}).get("status", {}).get("rollout") or {}).get("phase")


async def rotate(kmock: RoutewayEmulator) -> None:
    for obj in world(1)[:4]:
        body = {"data": obj["data"]}
        resp = await kmock.patch(f"/api/v1/namespaces/default/secrets/{obj['metadata']['name']}", json=body)
        assert resp.status == 200, await resp.text()


async def test_planted_keys_found_nowhere_the_operator_writes_or_logs(
    kmock: RoutewayEmulator, debug_log: Collect
) -> None:
    seed(kmock, *world(0))
    proxies = StandInProxies(kmock)
    async with running_operator(kmock, proxy_reader=proxies) as state:
        await eventually(lambda: UPSTREAM_KEYS[0] in credentials(kmock).values(), what="credentials written")
        await eventually(lambda: rollout_phase(kmock) == "Stable", what="the route's first revision")
        await settled(kmock, state)
        first_credentials = credentials(kmock)

        # an edit of the route's backend: a rollout starts, with a ControllerRevision
        await patch(kmock, "ModelBackend", "upstream", {"spec": {"version": "v2"}})
        await eventually(lambda: rollout_phase(kmock) in ("Progressing", "Paused"), what="a rollout")
        # every key rotated: the credentials follow
        await rotate(kmock)
        await eventually(lambda: UPSTREAM_KEYS[1] in credentials(kmock).values(), what="rotated credentials")
        # a client's key Secret removed, and a new client
        resp = await kmock.delete("/api/v1/namespaces/default/secrets/twin-key")
        assert resp.status == 200, await resp.text()
        await create(kmock, client("late", "team-key"))
        await eventually(
            lambda: (
                (
                    condition(get(kmock, "routeway.dev/v1alpha1/modelclients", "twin"), "ResolvedRefs") or {}
                ).get("reason")
                == "SecretNotFound"
            ),
            what="the twin's Secret gone",
        )
        await settled(kmock, state)
        last_credentials = credentials(kmock)

    # the credentials Secret: the upstream key (sent upstream), every client key as a hash
    for values, version in ((first_credentials, 0), (last_credentials, 1)):
        assert UPSTREAM_KEYS[version] in values.values()
        hashes = {f"sha256:{forms(k)['sha256']}" for k in (CLIENT_KEYS[version], GATEWAY_KEYS[version])}
        assert hashes <= set(values.values()), values.keys()
        for ref, value in values.items():
            assert value == UPSTREAM_KEYS[version] or (value.startswith("sha256:") and len(value) == 71), ref

    documents: dict[str, str] = {}
    for (resource, namespace, name), obj in kmock.objects.items():
        if not obj.deleted and resource.plural != "secrets":
            documents[f"{resource} {namespace}/{name}"] = json.dumps(obj.raw)
    # the credentials Secret beyond its values: metadata (annotations, labels), type
    documents["credentials Secret"] = json.dumps(without_values(get(kmock, "v1/secrets", CREDENTIALS)))
    assert any("controllerrevisions" in where for where in documents)
    assert any("events" in where for where in documents)
    user_secret_writes = []
    for request in kmock._requests:
        path = request.url.path
        if any(path.endswith(f"/secrets/{name}") for name in USER_SECRETS):
            if request.method != "GET":
                user_secret_writes.append((request.method, path.rsplit("/", 1)[-1]))
            continue  # the test's own writes carry the keys; the operator's reads carry none
        text = request.text
        if path.endswith(f"/secrets/{CREDENTIALS}") or (path.endswith("/secrets") and CREDENTIALS in text):
            text = json.dumps(without_values(json.loads(text))) if text else ""  # values: checked above
        documents[f"request {request.id} {request.method} {path}"] = f"{request.url} {request.headers} {text}"
    # the test's rotation and deletion only: the operator never writes a user's Secret
    assert sorted(user_secret_writes) == sorted(
        [("PATCH", name) for name in USER_SECRETS] + [("DELETE", "twin-key")]
    )
    documents["log"] = "\n".join(debug_log.lines)
    assert any(line.startswith("DEBUG kopf") for line in debug_log.lines)
    assert leaks(documents) == []
