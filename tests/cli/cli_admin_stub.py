"""A stand-in for `routeway serve`'s rollout endpoints, on a real aiohttp server on 127.0.0.1.

It serves the shape issue 12 pins for the admin port — `GET /rollouts` and
`POST /rollouts/{ns}/{name}/{action}` with OpenAI-shaped errors — with the state of the real
rollout machine (routeway.rollout.step, a fake clock): an action is stepped as an `Action`,
and one the machine refuses (its `ActionRefused` event) is answered 409 with the machine's
reason. The real endpoints are being built in `routeway serve`; once merged, the CLI tests
can point `AdminClient` at those instead of this.

The server runs on its own event loop in a thread, so a test can call `routeway.cli.main`
(which runs `asyncio.run`) as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from routeway.rollout import (
    Action,
    Inputs,
    RevisionRef,
    RolloutState,
    policy_from_spec,
    state_to_document,
    step,
)
from routeway.rollout.weights import WeightShare

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
SPEC: dict[str, Any] = {
    "strategy": {
        "canary": {
            "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "5m"}}],
        }
    }
}
POLICY = policy_from_spec(SPEC)
V1 = RevisionRef("r1", ("default/a",))
V2 = RevisionRef("r2", ("default/b",))


@dataclass
class AdminStub:
    """Route default/chat, paused at its `pause: {}` step with r2 at 10%; default/other stable."""

    url: str = ""
    now: float = T0
    posts: list[tuple[str, Any]] = field(default_factory=list)
    gets: int = 0
    fail_gets: bool = False  # answer GET /rollouts with a 500 (a server in trouble)
    states: dict[str, RolloutState] = field(default_factory=dict)
    counter: int = 0

    def __post_init__(self) -> None:
        first = step(None, Inputs(V1, POLICY, T0)).state
        self.states["default/chat"] = step(first, Inputs(V2, POLICY, T0 + 1)).state
        self.states["default/other"] = first
        assert self.states["default/chat"].phase == "Paused"

    def entry(self, route: str) -> dict[str, Any]:
        s = self.states[route]
        weights = [WeightShare("default/a", "stable", 100.0 - s.canary_weight)]
        if s.canary is not None and s.in_progress:
            weights.append(WeightShare("default/b", "canary", float(s.canary_weight)))
        return {"route": route, **state_to_document(s, weights), "steps": SPEC["strategy"]["canary"]["steps"]}

    async def list_rollouts(self, request: web.Request) -> web.Response:
        self.gets += 1
        if self.fail_gets:
            return error(500, "the rollout adapter is not running", "server_error")
        return web.json_response({"rollouts": [self.entry(r) for r in sorted(self.states)]})

    async def act(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.posts.append((request.path, body))
        route = f"{request.match_info['namespace']}/{request.match_info['name']}"
        kind = request.match_info["action"]
        if route not in self.states:
            return error(404, f"no route {route}", "not_found_error")
        if kind not in ("promote", "promote-full", "abort", "retry", "undo"):
            return error(404, f"no action {kind}", "not_found_error")
        revision = (body or {}).get("revision") if isinstance(body, dict) else None
        if kind == "undo" and not revision:
            return error(400, 'undo needs a body {"revision": ...}', "invalid_request_error")
        self.counter += 1
        self.now += 1
        desired = self.states[route].canary or self.states[route].stable
        desired = V2 if route == "default/chat" else desired
        action = Action(kind, f"admin-{self.counter}", revision)  # type: ignore[arg-type]
        decision = step(self.states[route], Inputs(desired, POLICY, self.now, actions=(action,)))
        refused = [e.message for e in decision.events if e.reason == "ActionRefused"]
        if refused:
            self.states[route] = decision.state
            return error(409, refused[0], "invalid_request_error")
        self.states[route] = decision.state
        return web.json_response(self.entry(route))


def error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


@contextlib.contextmanager
def running_stub() -> Iterator[AdminStub]:
    """The stub on 127.0.0.1 (a free port) on a thread of its own until the block ends."""
    stub = AdminStub()
    app = web.Application()
    app.router.add_get("/rollouts", stub.list_rollouts)
    app.router.add_post("/rollouts/{namespace}/{name}/{action}", stub.act)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stub.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
