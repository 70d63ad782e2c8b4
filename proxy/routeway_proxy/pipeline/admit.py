"""Parse and admit: read the body within the gateway's size limit, check the fields the
gateway itself reads, and find the route of the requested model.

Only what routing, limits and accounting read is checked here (`model`, the endpoint's
required field, `stream`, `stream_options`, `max_tokens`, `max_completion_tokens`, `n`);
everything else is the model server's to judge, so a field the gateway does not know is
passed on untouched. Every refusal is a `ProxyError` in the OpenAI shape that names the
offending parameter, raised before any later stage does work for the request.

Why a depth limit (`MAX_JSON_DEPTH`): the body is re-serialised for the upstream, and orjson
writes at most 254 levels, although it reads up to 1,024; a body between the two would pass
admission and fail later. The check is gated so that it costs nothing measurable: a body of
at most `2 * MAX_JSON_DEPTH + 1` bytes cannot be too deep (two brackets per level) and is not
looked at; a longer one costs two `bytes.count` passes in C (nesting needs an opening
bracket per level, so a body with fewer brackets than the limit cannot be too deep); only a
body with more is checked itself (`nests_too_deep`). Measurements: bench/RESULTS.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from routeway_proxy.errors import ProxyError, make_bad_request

if TYPE_CHECKING:
    from aiohttp import web

    from routeway_proxy.providers import EndpointKind
    from routeway_proxy.table import RouteEntry, RoutingTable

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects a request body may have (the body itself is level 1)."""

MAX_COUNT = 2**31 - 1
"""Largest `max_tokens`, `max_completion_tokens` or `n` the gateway passes on."""

_SHALLOW_BYTES = 2 * MAX_JSON_DEPTH + 1
"""A body this short cannot nest deeper than the limit: each level takes two brackets."""

REQUIRED_FIELD: dict[EndpointKind, str] = {
    "chat": "messages",
    "completions": "prompt",
    "embeddings": "input",
}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise ProxyError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
    if length is not None:
        return await request.read()
    parts = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, f"Request body is larger than {limit} bytes.", "request_too_large")
        parts.append(chunk)
    return b"".join(parts)


def parse_request(kind: EndpointKind, raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON body and its `model`, or a 400 naming the offending field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise make_bad_request("Could not parse the request body as JSON.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise make_bad_request("The request body must be a JSON object.", None, "invalid_json")
    if (
        len(raw) > _SHALLOW_BYTES
        and raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
        and nests_too_deep(body)
    ):
        raise make_bad_request(
            f"The request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.",
            None,
            "invalid_json",
        )
    model = body.get("model")
    if model is None:
        raise make_bad_request("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise make_bad_request("'model' must be a non-empty string.", "model")
    required = REQUIRED_FIELD[kind]
    if body.get(required) is None:
        raise make_bad_request(
            f"Missing required parameter: '{required}'.", required, "missing_required_parameter"
        )
    if kind == "chat" and not isinstance(body["messages"], list):
        raise make_bad_request("'messages' must be an array.", "messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise make_bad_request("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise make_bad_request("'stream_options' must be an object.", "stream_options")
    # counts: the type and a sane range only (a negative one would be reserved by the limits as
    # a credit, one beyond 32 bits overflows stores that count in doubles or 64-bit integers);
    # which values a model accepts is the model server's to judge. Unrolled: the hot path.
    value = body.get("max_tokens")
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_COUNT):
        raise _not_a_count("max_tokens")
    value = body.get("max_completion_tokens")
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_COUNT):
        raise _not_a_count("max_completion_tokens")
    value = body.get("n")
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_COUNT):
        raise _not_a_count("n")
    return body, model


def _not_a_count(name: str) -> ProxyError:
    return make_bad_request(f"'{name}' must be an integer from 0 to {MAX_COUNT}.", name)


def nests_too_deep(body: dict[str, Any]) -> bool:
    """Whether `body` nests deeper than `MAX_JSON_DEPTH`.

    Fast path, when the start-up probe confirmed orjson's write limit: write the body wrapped
    in as many arrays as that limit exceeds ours, which fails exactly when the body is too deep
    (one C pass; a Python walk of a tool-heavy body's containers costs several times more). A
    failure is confirmed by the walk, so no other encoding error can pass for depth.
    """
    wraps = _DUMPS_WRAPS
    if wraps is None:
        return _nests_deeper(body, MAX_JSON_DEPTH)
    wrapped: Any = body
    for _ in range(wraps):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return _nests_deeper(body, MAX_JSON_DEPTH)
    return False


def _probe_dumps_wraps(limit: int = 254) -> int | None:
    """How many arrays to wrap a body in so that orjson.dumps fails exactly beyond
    `MAX_JSON_DEPTH`, if orjson writes `limit` levels and refuses one more (not documented,
    so verified here, once); None otherwise, and the walk is used."""

    def nest(depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth - 1):
            value = [value]
        return value

    try:
        orjson.dumps(nest(limit))
    except orjson.JSONEncodeError:
        return None
    try:
        orjson.dumps(nest(limit + 1))
    except orjson.JSONEncodeError:
        return limit - MAX_JSON_DEPTH
    return None


_DUMPS_WRAPS = _probe_dumps_wraps()


def _nests_deeper(value: Any, levels: int) -> bool:
    """Whether `value` (an array or object) holds containers nested more than `levels` deep."""
    if levels == 0:
        return True
    children = value.values() if type(value) is dict else value
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and _nests_deeper(child, levels - 1):
            return True
    return False


def find_route(table: RoutingTable, model: str) -> RouteEntry:
    route = table.routes.get(model)
    if route is None:
        raise model_not_found(model)
    return route


def model_not_found(model: str) -> ProxyError:
    return ProxyError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        "model_not_found",
        param="model",
    )
