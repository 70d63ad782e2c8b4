"""Where `routeway rollout` reads a rollout and acts on it: `routeway serve`'s admin port.

Two sources with one shape (`RolloutSource`): `AdminClient` here talks to the admin port of
`routeway serve` (`GET /rollouts`, `POST /rollouts/{ns}/{name}/{action}`), and
`routeway.rollout_kube.ClusterClient` to the Kubernetes API (the route's `status.rollout`,
the pinned annotations). Both give `RolloutView`s (routeway.rollout_view) and raise
`RolloutError` for anything the CLI reports with exit code 1: not found, unreachable, a
server error. A refused action is not an exception but `ActionResult.refused`.

`AdminClient(base_url)` is all a test (or the end-to-end suite) needs to point the CLI's
logic at a running `routeway serve`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from routeway.rollout_view import RolloutView, view_from_admin

ACTIONS = ("promote", "promote-full", "abort", "retry", "undo")
ADMIN_TIMEOUT = 10.0  # seconds for one admin request


class RolloutError(Exception):
    """What the CLI prints as `error: …` with exit code 1."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """An action's outcome: handled (with the rollout as it is now, when known), refused (with
    the server's or operator's reason), or still pending (not confirmed in time)."""

    view: RolloutView | None = None
    refused: str | None = None
    pending: str | None = None


class RolloutSource(Protocol):
    async def status(self, namespace: str, name: str) -> RolloutView: ...

    async def act(
        self, namespace: str, name: str, action: str, revision: str | None = None
    ) -> ActionResult: ...

    async def close(self) -> None: ...


class AdminClient:
    """`routeway serve`'s admin port: one shared session for every call of one command."""

    def __init__(self, base_url: str, *, timeout: float = ADMIN_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        if "://" not in self.base_url:
            self.base_url = f"http://{self.base_url}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def close(self) -> None:
        await self._session.close()

    async def rollouts(self) -> list[dict[str, Any]]:
        """Every route's rollout entry (`GET /rollouts`)."""
        doc = await self._request("GET", "/rollouts")
        entries = doc.get("rollouts") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise RolloutError(f"{self.base_url}/rollouts did not answer a rollouts list")
        return [e for e in entries if isinstance(e, dict)]

    async def status(self, namespace: str, name: str) -> RolloutView:
        route = f"{namespace}/{name}"
        entries = await self.rollouts()
        for entry in entries:
            if entry.get("route") == route:
                return view_from_admin(entry)
        known = ", ".join(sorted(str(e.get("route")) for e in entries)) or "none"
        raise RolloutError(f"route {route} not found at {self.base_url} (routes: {known})")

    async def act(self, namespace: str, name: str, action: str, revision: str | None = None) -> ActionResult:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        body = {"revision": revision} if action == "undo" else {}
        try:
            answer = await self._request("POST", f"/rollouts/{namespace}/{name}/{action}", body)
        except _Refused as exc:
            return ActionResult(refused=str(exc))
        route = f"{namespace}/{name}"
        entry = answer.get("rollout", answer) if isinstance(answer, dict) else None
        if isinstance(entry, dict) and "phase" in entry:
            return ActionResult(view=view_from_admin({"route": route, **entry}))
        return ActionResult(view=await self.status(namespace, name))

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RolloutError(
                f"cannot reach routeway serve's admin port at {self.base_url}: {_why(exc)}"
            ) from None
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        if 200 <= status < 300:
            return doc
        message = _error_message(doc) or text.strip()[:200] or f"HTTP {status}"
        if status in (400, 409):
            raise _Refused(message)
        if status == 404:
            raise RolloutError(f"{message} ({method} {url}: 404)")
        raise RolloutError(f"{method} {url}: HTTP {status}: {message}")


class _Refused(Exception):
    pass


def _error_message(doc: Any) -> str | None:
    """The message of an OpenAI-shaped error `{"error": {"message", "type", "code"}}`."""
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return None


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
