"""Helpers of the rollout tests under `routeway serve`: manifests, real traffic, admin reads.

Backends are the built-in `mock` provider (each version answers with its own model name, so
a response tells which spec served it); traffic is the official `openai` client, several
requests at a time, recording which arm (`x-routeway-arm`) and which model answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
from process_rig import Routeway, eventually, write_atomically

ROLLOUT_DEADLINE = 60.0  # seconds: generous on a busy 2-core machine; no test waits this long when well


def backend_yaml(name: str, model: str, *, error_rate: float = 0.0) -> str:
    mock = f"{{errorRate: {error_rate}}}" if error_rate else "{}"
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}, namespace: default}}
spec:
  provider: mock
  model: {model}
  mock: {mock}
"""


def route_yaml(
    backend: str,
    steps: str,
    *,
    analysis: str | None = None,
    name: str = "chat",
    extra: str = "",
) -> str:
    """A route on `backend` with `steps` (a YAML flow list) and an optional analysis (flow map)."""
    analysis_line = f"      analysis: {analysis}\n" if analysis else ""
    return f"""\
apiVersion: routeway.dev/v1alpha1
kind: ModelRoute
metadata: {{name: {name}, namespace: default}}
spec:
  model: {name}
  backends: [{{name: {backend}, weight: 100}}]
  retries: {{attempts: 0}}
  strategy:
    canary:
      steps: {steps}
{analysis_line}{extra}"""


ERROR_RATE_ANALYSIS = (
    "{interval: 1s, window: 3s, minRequests: 20, failureLimit: 1, onInconclusive: Continue, "
    "metrics: [{name: errorRate, max: 0.05}]}"
)


@dataclass
class Answer:
    arm: str | None  # x-routeway-arm; None outside a rollout
    model: str | None  # the model that answered (None for an error)
    status: int


@dataclass
class Traffic:
    """Requests sent all along by a few concurrent clients; `answers` in completion order."""

    answers: list[Answer] = field(default_factory=list)

    def since(self, index: int) -> list[Answer]:
        return self.answers[index:]


async def ask(client: openai.AsyncOpenAI, model: str = "chat") -> Answer:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}]
        )
    except openai.APIStatusError as exc:
        return Answer(exc.response.headers.get("x-routeway-arm"), None, exc.status_code)
    except openai.APIConnectionError:  # timeouts too: recorded, the traffic goes on
        return Answer(None, None, 0)
    return Answer(raw.headers.get("x-routeway-arm"), raw.parse().model, raw.http_response.status_code)


def client_for(routeway: Routeway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{routeway.url}/v1", api_key="unused", max_retries=0, timeout=10.0)


@contextlib.asynccontextmanager
async def traffic(routeway: Routeway, clients: int = 4, pause: float = 0.005) -> AsyncIterator[Traffic]:
    """Real traffic while the block runs (from when every worker is ready)."""

    async def ready() -> bool:
        return (await routeway.get_admin("/readyz"))[0] == 200

    await eventually(ready, within=ROLLOUT_DEADLINE, what="/readyz")
    seen = Traffic()
    client = client_for(routeway)

    async def loop() -> None:
        while True:
            seen.answers.append(await ask(client))
            await asyncio.sleep(pause)

    tasks = [asyncio.create_task(loop()) for _ in range(clients)]
    try:
        yield seen
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


async def rollout(routeway: Routeway, route: str = "default/chat") -> dict[str, Any]:
    """The route's entry of GET /rollouts, once listed (right after start-up the first load
    may still be on its way, with every worker to start: then the list is empty)."""

    async def listed() -> dict[str, Any] | None:
        status, document = await routeway.get_admin("/rollouts")
        assert status == 200, document
        found = [r for r in document["rollouts"] if r["route"] == route]
        return found[0] if found else None

    entry: dict[str, Any] = await eventually(listed, within=ROLLOUT_DEADLINE, what=f"{route} in /rollouts")
    return entry


async def wait_phase(routeway: Routeway, phase: str, *, within: float = ROLLOUT_DEADLINE) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        current = await rollout(routeway)
        last.update(current)
        return current if current["phase"] == phase else None

    try:
        found: dict[str, Any] = await eventually(reached, within=within, what=f"phase {phase}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the rollout: {last}\n{routeway.log()[-3000:]}") from None
    return found


async def served_canary(routeway: Routeway, route: str = "default/chat") -> dict[str, Any] | None:
    """The canary arm of the config the proxy has applied (what requests see)."""
    status, config = await routeway.get_admin("/config")
    assert status == 200, config
    for served in config["routes"]:
        if served["id"] == route:
            canary: dict[str, Any] | None = served.get("canary")
            return canary
    raise AssertionError(f"route {route} not served: {config}")


async def wait_applied_without_canary(routeway: Routeway) -> None:
    async def applied() -> bool:
        return await served_canary(routeway) is None

    await eventually(applied, within=ROLLOUT_DEADLINE, what="the config without the canary arm applied")


async def arm_counts(routeway: Routeway, revision: str, route: str = "default/chat") -> int:
    """Attempts the proxy observed on one revision of the route (every outcome)."""
    status, report = await routeway.get_admin("/observations")
    assert status == 200, report
    total = 0
    for arm in report["arms"]:
        if arm["route"] == route and arm["revision"] == revision:
            total += sum(arm["outcomes"].values())
    return total


async def post(routeway: Routeway, path: str, body: Any = None) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{routeway.admin}{path}", data=data) as response,
    ):
        text = await response.text()
        try:
            return response.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return response.status, text


def save(path: Path, text: str) -> None:
    write_atomically(path, text)
