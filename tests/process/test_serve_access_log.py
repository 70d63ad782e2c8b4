"""`routeway serve --access-log` as a process (two workers): one bare JSON line per request.

Covers: a ModelClient's requests (its name, cost in the backend's currency), a gateway key's
("" client), a 401 with a planted unknown key, a 403, and answers outside the pipeline (405,
an unknown path's 404, `/v1/models`) — one line each, whichever worker answered, each with
the `x-request-id` its answer carried (ids distinct across both workers); the planted keys in
no line (nor anywhere in the output); without the flag, no line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from process_rig import Launch, Routeway, Upstream
from test_serve_clients import ADMIN_KEY, KEYS, PRICE_IN, PRICE_OUT, SEARCH_KEY, chat, manifests, start

UNKNOWN_KEY = "sk-unknown-PLANTED-77aa0b1c"


def access_lines(routeway: Routeway) -> list[dict[str, Any]]:
    """Every output line that is a JSON object: the access log's (other lines have a prefix)."""
    return [orjson.loads(line) for line in routeway.log().splitlines() if line.startswith("{")]


async def requests(routeway: Routeway) -> list[tuple[int, str]]:
    """Make the requests; the (status, x-request-id) of the answers outside the pipeline."""
    for _ in range(3):
        await chat(routeway, SEARCH_KEY)
    await chat(routeway, ADMIN_KEY, "secret-model")
    with pytest.raises(openai.AuthenticationError):
        await chat(routeway, UNKNOWN_KEY)
    with pytest.raises(openai.PermissionDeniedError):
        await chat(routeway, SEARCH_KEY, "secret-model")
    answers = []
    headers = {"Authorization": f"Bearer {SEARCH_KEY}"}
    for method, path in [("GET", "/v1/chat/completions"), ("GET", "/nowhere"), ("GET", "/v1/models")]:
        async with (
            aiohttp.ClientSession() as session,  # a fresh connection: either worker may answer
            session.request(method, routeway.url + path, headers=headers) as response,
        ):
            await response.read()
            answers.append((response.status, response.headers["x-request-id"]))
    return answers


async def test_one_line_per_request_and_no_key(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    (tmp_path / "m.yaml").write_text(manifests(upstream.url))
    routeway = await start(launch, tmp_path / "m.yaml", "--access-log")
    outside = await requests(routeway)
    assert await routeway.stop() == 0
    lines = access_lines(routeway)
    # two workers write their own lines: the order between them is not the requests' order
    assert sorted((line["client"], line["status"], line["route"]) for line in lines) == [
        ("", 200, ""),  # /v1/models
        ("", 200, "default/secret-model"),
        ("", 401, ""),
        ("", 404, ""),
        ("", 405, ""),
        *[("default/search-team", 200, "default/chat")] * 3,
        ("default/search-team", 403, ""),
    ]
    assert [status for status, _ in outside] == [405, 404, 200]
    by_id = {line["request_id"]: line["status"] for line in lines}
    assert len(by_id) == len(lines)  # distinct, across both workers
    assert all(by_id[rid] == status for status, rid in outside)
    search = next(line for line in lines if line["status"] == 200 and line["client"])
    assert search["backend"] == "default/upstream" and search["model"] == "chat"
    assert (search["prompt_tokens"], search["completion_tokens"]) == (3, 1)
    assert search["cost"] == pytest.approx((3 * PRICE_IN + 1 * PRICE_OUT) / 1_000_000)
    assert search["currency"] == "EUR"
    output = routeway.log()
    for key in (*KEYS, UNKNOWN_KEY):
        assert key not in output


async def test_no_line_without_the_flag(tmp_path: Path, launch: Launch, upstream: Upstream) -> None:
    (tmp_path / "m.yaml").write_text(manifests(upstream.url))
    routeway = await start(launch, tmp_path / "m.yaml")
    outside = await requests(routeway)
    assert await routeway.stop() == 0
    assert access_lines(routeway) == []
    assert all(rid for _, rid in outside)  # the id is on every answer, log or not


@pytest.mark.parametrize("command", [["serve", "-f", "m.yaml"], ["proxy", "--config", "c.json"]])
def test_both_commands_take_the_flag(command: list[str]) -> None:
    from routeway_proxy.commands import options_from_args

    from routeway.cli import build_parser

    for flags, expected in (([], False), (["--access-log"], True)):
        args = build_parser().parse_args([*command, *flags])
        assert options_from_args(args, command=command[0]).access_log is expected
