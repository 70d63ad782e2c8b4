"""`routeway rollout` against a cluster: read `status.rollout`, act through the pinned annotations.

Status is the ModelRoute's `status.rollout` (routeway.rollout.document's document, written by
the operator) with the steps of its `spec.strategy`. An action is a merge patch of exactly one
annotation on the route — `routeway.dev/promote`, `promote-full`, `abort` or `retry` set to a
fresh token (a UTC timestamp and random hex: never one the operator handled before), or
`routeway.dev/undo` set to `REVISION@TOKEN` (the operator also takes a bare revision, handled
once) — then, unless told not to wait, a poll of the route
until `status.rollout.handledActions` echoes the token. The operator consumes a refused
action's token too (the machine's `ActionRefused` event says why): the reason is read from the
handled entry if the operator puts one there, else from that Event, which names the token.

Credentials and the server come from KUBECONFIG (or ~/.kube/config), with `--context`, else
from the in-cluster service account, as kubectl does. The calls are plain JSON by URL path on
kubernetes_asyncio's authenticated client; not the operator's `KubeApi`, which maps errors to
kopf's exceptions and would make the CLI import kopf.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from routeway.resources import GROUP, VERSION
from routeway.rollout_client import ACTIONS, ActionResult, RolloutError
from routeway.rollout_view import RolloutView, view_from_route

PLURAL = "modelroutes"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 15.0
WAIT = 10.0  # seconds an action waits for the operator to echo its token
REFUSAL_GRACE = 1.0  # seconds to look for the ActionRefused Event once the token is echoed
POLL = 0.25
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def annotation(action: str) -> str:
    """The pinned annotation of an action: `routeway.dev/promote`, …, `routeway.dev/undo`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return f"{GROUP}/{action}"


def fresh_token(now: float | None = None) -> str:
    """A token no earlier action used: the UTC time to the second (readable in the route's
    annotations) and 6 random hex digits (two actions within one second still differ)."""
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, tz=datetime.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def kubeconfig_path() -> str:
    """KUBECONFIG as set now (kubernetes_asyncio reads it once at import), else ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def default_namespace(context: str | None = None) -> str:
    """The namespace of the kubeconfig context (`--context` or the current one), else the
    in-cluster service account's, else "default"."""
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=kubeconfig_path())
    except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError):
        contexts, current = [], None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    if chosen is not None:
        namespace = (chosen.get("context") or {}).get("namespace")
        return str(namespace) if namespace else "default"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_NAMESPACE.is_file():
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    return "default"


class ClusterClient:
    """ModelRoutes through the Kubernetes API, for status and the annotation actions."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        wait: float | None = WAIT,
        refusal_grace: float = REFUSAL_GRACE,
        poll: float = POLL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = api_client
        self.wait = wait
        self.refusal_grace = refusal_grace
        self.poll = poll
        self._clock = clock

    @classmethod
    async def connect(cls, *, context: str | None = None, **options: Any) -> ClusterClient:
        """KUBECONFIG (with `context`) when there is one or a context is named, else the
        in-cluster config."""
        configuration = k8s_client.Configuration()
        path = kubeconfig_path()
        if not _kubeconfig_exists(path) and not _in_cluster_only(path):
            raise RolloutError(
                f"no kubeconfig at {path} and not in a cluster; for `routeway serve` give --admin URL"
            )
        try:
            if context is None and _in_cluster_only(path):
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await k8s_config.load_kube_config(
                    config_file=path,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            raise RolloutError(f"no usable Kubernetes configuration ({path}): {exc}") from None
        return cls(k8s_client.ApiClient(configuration), **options)

    async def close(self) -> None:
        await self._client.close()

    # ---------------------------------------------------------------------- reading

    async def route(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await self._call("GET", _route_path(namespace, name))
        if obj is None:
            raise RolloutError(f"modelroute {namespace}/{name} not found")
        return dict(obj)

    async def status(self, namespace: str, name: str) -> RolloutView:
        view = view_from_route(await self.route(namespace, name))
        if view is None:
            raise RolloutError(
                f"modelroute {namespace}/{name} has no status.rollout yet "
                "(the operator records one for every route it serves)"
            )
        return view

    # ---------------------------------------------------------------------- acting

    async def act(self, namespace: str, name: str, action: str, revision: str | None = None) -> ActionResult:
        key = annotation(action)
        before = _handled(await self.route(namespace, name))
        token = fresh_token()
        if action == "undo" and not revision:
            raise ValueError("undo needs a revision")
        # undo: the revision, then a fresh token, so a second undo to the same revision is a
        # new value (the operator handles each value once)
        value = f"{revision}@{token}" if action == "undo" else token
        patch = {"metadata": {"annotations": {key: value}}}
        await self._call("PATCH", _route_path(namespace, name), body=patch, content_type=MERGE_PATCH)
        if not self.wait:
            return ActionResult(pending=f"{key}={value} set on modelroute {namespace}/{name}")
        deadline = self._clock() + self.wait
        while True:
            obj = await self.route(namespace, name)
            entry = _echo(_handled(obj), before, action, value)
            if entry is not None:
                refused = entry.get("refused") or await self._refusal(namespace, name, action, entry)
                return ActionResult(view=view_from_route(obj), refused=str(refused) if refused else None)
            if self._clock() >= deadline:
                return ActionResult(
                    pending=(
                        f"{key}={value} is set on modelroute {namespace}/{name} but the operator did not "
                        f"handle it within {self.wait:g}s; it stays set and is handled once, when the operator runs"
                    )
                )
            await asyncio.sleep(self.poll)

    async def _refusal(self, namespace: str, name: str, action: str, entry: Mapping[str, Any]) -> str | None:
        """The reason of the `ActionRefused` Event that names this action's token, if one is
        posted within `refusal_grace` (the operator may post it just after writing status)."""
        needle = f"{action} ({entry.get('token')}) refused"
        deadline = self._clock() + self.refusal_grace
        while True:
            selector = f"involvedObject.name={name},reason=ActionRefused"
            events = await self._call(
                "GET", f"/api/v1/namespaces/{quote(namespace)}/events", params={"fieldSelector": selector}
            )
            for event in (events or {}).get("items") or ():
                involved = event.get("involvedObject") or {}
                message = str(event.get("message") or "")
                if (
                    involved.get("name") == name
                    and event.get("reason") == "ActionRefused"
                    and needle in message
                ):
                    return message.split(" refused: ", 1)[-1]
            if self._clock() >= deadline:
                return None
            await asyncio.sleep(self.poll)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """A JSON request; None for a 404 on GET, RolloutError for anything else that failed."""
        host = self._client.configuration.host
        try:
            resp = await self._client.call_api(
                path,
                method,
                query_params=list((params or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            status, raw = int(exc.status or 0), exc.body
        except (OSError, TimeoutError) as exc:
            raise RolloutError(
                f"cannot reach the Kubernetes API at {host}: {exc or type(exc).__name__}"
            ) from None
        else:
            try:
                raw = await resp.read()
            finally:
                resp.release()
            status = resp.status
            if 200 <= status <= 299:
                return json.loads(raw) if raw else None
        if status == 404 and method == "GET":
            return None
        raise RolloutError(f"{method} {path}: {status} {_status_message(raw)}")


def _in_cluster_only(kubeconfig: str) -> bool:
    """In a pod with no kubeconfig file: use the service account, as kubectl does."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not _kubeconfig_exists(kubeconfig)


def _kubeconfig_exists(kubeconfig: str) -> bool:
    return any(Path(p).exists() for p in kubeconfig.split(os.pathsep) if p)


def _route_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"


def _handled(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rollout = (obj.get("status") or {}).get("rollout") or {}
    handled = rollout.get("handledActions") or []
    return [h for h in handled if isinstance(h, Mapping)]


def _echo(
    handled: list[Mapping[str, Any]], before: list[Mapping[str, Any]], action: str, token: str | None
) -> Mapping[str, Any] | None:
    """The handled entry of this action: its token echoed, or (undo, whose token the operator
    derives) an undo entry that was not there before."""
    for entry in handled:
        if entry.get("action") != action:
            continue
        if token is not None and entry.get("token") == token:
            return entry
        if token is None and entry not in before:
            return entry
    return None


def _status_message(raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])[:300]
    return str(raw or "")[:300]
