"""Every error the gateway answers, in the OpenAI error shape.

Why one module: the OpenAI SDKs map status codes to typed exceptions and read
`error.message/type/code`, so a client must never see any other shape from the gateway — not
for a bad path, a wrong method, an unknown model or an upstream that fell over. `ProxyError`
is raised anywhere on the request path and rendered once by the middleware in `app.py`.

Messages name the route and backend ids, never an upstream URL or a credential.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

RETRY_AFTER_SECONDS = "1"
"""Retry-After on the gateway's own 503s: capacity frees up quickly, clients back off anyway."""


class ProxyError(Exception):
    """An error answered to the client; `headers` are added to the error response."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.param = param
        self.headers = dict(headers) if headers else {}


def render_error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    """The OpenAI error document as bytes."""
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def make_error_response(error: ProxyError, extra_headers: Mapping[str, str] | None = None) -> web.Response:
    """Render a `ProxyError` as a JSON response with its headers (routing headers included)."""
    response = web.Response(
        status=error.status,
        body=render_error_body(error.message, error.error_type, error.code, error.param),
        content_type="application/json",
    )
    if extra_headers:
        response.headers.update(extra_headers)
    if error.headers:
        response.headers.update(error.headers)
    return response


def make_bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ProxyError:
    return ProxyError(400, message, code, INVALID_REQUEST, param)


def make_overloaded(message: str) -> ProxyError:
    """503 with Retry-After: no backend could take the request right now."""
    return ProxyError(
        503, message, "backend_unavailable", SERVER_ERROR, headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


def make_upstream_timeout(message: str) -> ProxyError:
    return ProxyError(504, message, "upstream_timeout", SERVER_ERROR)


def make_upstream_unreachable(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_connect_error", SERVER_ERROR)


def make_upstream_failed(status: int, message: str) -> ProxyError:
    """An upstream 5xx whose body was not an OpenAI error: same status, our shape."""
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return ProxyError(status, message, "upstream_error", SERVER_ERROR, headers=headers)


def make_internal_error() -> ProxyError:
    return ProxyError(
        500, "The gateway failed to handle the request; see its log.", "internal_error", SERVER_ERROR
    )
