"""The request log line (`--access-log`): one JSON line per answer the gateway gives.

Opt-in: aiohttp's own access log stays off, and with the flag off the request path pays one
attribute check (`ProxyMetrics.access is None`) where a request is settled. With it on, the
line is written where the request's one accounting record is made (`pipeline/settle.py` and
its callers: `Exchange.run` for a routed request, the inference handler for one refused
before routing or answered from the cache), and for answers outside the pipeline by whoever
gives them (`write_answer`: the inference handler's 405 and its 503 before the first config,
and `app.py` for `/v1/models`, unknown paths and their errors) — so every answer of the app
writes exactly one line. On the logger `routeway.access` at INFO:

    {"time": "2026-12-06T09:10:11.123Z", "request_id": "3f9c…-1a",
     "method": "POST", "path": "/v1/chat/completions",
     "model": "chat", "route": "default/chat", "backend": "default/openai",
     "arm": "canary",              # only for a route in a rollout
     "client": "default/search-team",   # the ModelClient id; "" for a gateway key or none
     "status": 200, "duration_ms": 12.345,
     "prompt_tokens": 5, "completion_tokens": 7,   # null: the answer reported no usage
     "cost": 0.000123, "currency": "USD",           # only when the backend has pricing
     "cache": "miss"}              # hit | miss | bypass, only for a route with a cache

`request_id` is the id the answer carries as `x-request-id` (`request_ids.py`: the client's
own when valid, else a generated one). `model` is the route's public model name ("" before
routing: an unknown model is not echoed); an answer outside the pipeline has `model`,
`route`, `backend` and `client` "" and no token counts. Cost is `usage.price` of the
answering pair's pricing, the same value `routeway_cost_total` counts. Never logged: header
values other than the validated request id (so no key), bodies, the URL's query string.

`configure_access_log` sends the logger's lines to stdout as bare JSON (no prefix), apart
from the diagnostic log on stderr, so a log shipper can parse every stdout line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

from routeway_proxy.ledger import UsageSource
from routeway_proxy.request_ids import request_id_of
from routeway_proxy.streaming import Usage, find_document_usage
from routeway_proxy.usage import price

if TYPE_CHECKING:
    from aiohttp import web

    from routeway_proxy.metrics import PairMetrics
    from routeway_proxy.pipeline.authenticate import Caller
    from routeway_proxy.table import RouteEntry

ACCESS_LOGGER = "routeway.access"


def configure_access_log() -> None:
    """Bare JSON lines on stdout at INFO, whatever `--log-level` says for the rest."""
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def read_usage(usage: UsageSource) -> Usage | None:
    """The usage a request settles with: a JSON answer's is scanned here (once: the caller
    hands the result to the ledger instead of the bytes)."""
    if type(usage) is bytes:
        return find_document_usage(usage)
    return usage  # type: ignore[return-value]  # Usage or None


class AccessLog:
    """Writes the request log line (module docstring)."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    def write(
        self,
        request: web.BaseRequest,
        route: RouteEntry | None,
        pair: PairMetrics,
        code: int,
        seconds: float,
        usage: UsageSource,
        caller: Caller | None,
        cache: str | None,
    ) -> UsageSource:
        """Write the line; returns the usage read from `usage`, for the ledger (scanned once).
        Never raises: a failure here must not cost the request its accounting record."""
        try:
            read = read_usage(usage)
            self.logger.info("%s", self.format(request, route, pair, code, seconds, read, caller, cache))
        except Exception:
            logging.getLogger("routeway.proxy").exception("writing the access log line failed")
            return usage  # as given: the ledger reads it itself
        return read

    def write_answer(self, request: web.BaseRequest, code: int, seconds: float) -> None:
        """The line of an answer given outside the pipeline (no route, no caller, no usage)."""
        try:
            self.logger.info("%s", self.format(request, None, None, code, seconds, None, None, None))
        except Exception:
            logging.getLogger("routeway.proxy").exception("writing the access log line failed")

    @staticmethod
    def format(
        request: web.BaseRequest,
        route: RouteEntry | None,
        pair: PairMetrics | None,
        code: int,
        seconds: float,
        usage: Usage | None,
        caller: Caller | None,
        cache: str | None,
    ) -> str:
        """The line's JSON text (module docstring)."""
        now = time.time()
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
            "request_id": request_id_of(request),
            "method": request.method,
            "path": request.path,  # no query string
            "model": route.config.model if route is not None else "",
            "route": pair.route if pair is not None else "",
            "backend": pair.backend if pair is not None else "",
        }
        if route is not None and route.arm is not None:
            line["arm"] = route.arm
        line["client"] = caller.label if caller is not None else ""
        line["status"] = code
        line["duration_ms"] = round(seconds * 1000, 3)
        prompt, completion = usage if usage is not None else (None, None)
        line["prompt_tokens"] = prompt
        line["completion_tokens"] = completion
        pricing = pair.pricing if pair is not None else None
        if pricing is not None:
            line["cost"] = price(pricing, prompt or 0, completion or 0)
            line["currency"] = pricing.currency
        if cache is not None:
            line["cache"] = cache
        return orjson.dumps(line).decode()
