"""Parse and admit: read the body within the gateway's size limit, check the fields the
gateway itself needs, and find the route of the requested model.

Only what routing and accounting need is checked here (`model`, the endpoint's required
field, `stream`, `stream_options`); everything else is the model server's to judge, so a
field the gateway does not know is passed on untouched. Every refusal is a `ProxyError` in
the OpenAI shape that names the offending parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from routeway_proxy.errors import ProxyError, make_bad_request

if TYPE_CHECKING:
    from aiohttp import web

    from routeway_proxy.providers import EndpointKind
    from routeway_proxy.table import RouteEntry, RoutingTable

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
    return body, model


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
