"""The request id: one per answer, echoed as `x-request-id` and written in the request log line.

Why: a client reporting a failed call, and an operator reading the log, need one value that
names the same request on both sides (OpenAI sends `x-request-id` on every answer too). A
client or an edge proxy that already tagged the request keeps its id, so a trace crosses the
gateway unchanged — when the value is safe to echo and log: 1 to `MAX_LENGTH` characters of
letters, digits and `-._:/+=@` (so no control byte, space or quote reaches a header or a log
line, and a huge value cannot bloat either). Anything else is ignored and replaced, never
refused: a bad id is not worth a failed request.

Generated ids are a per-process random prefix and a decimal counter (a concatenation: a
format spec costs twice as much per request): unique across processes
and restarts (64 random bits), cheap enough for every request (no `uuid4`, no system call),
and meaningless to a client (they reveal a request count of one worker, nothing more).

The id lives on the request (`request[REQUEST_ID_KEY]`), so every writer of an answer or of
the log line reads the same value without passing it through each stage.
"""

from __future__ import annotations

import itertools
import os
import re

from aiohttp import web

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_KEY = web.RequestKey("routeway_request_id", str)
MAX_LENGTH = 128

_VALID = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_LENGTH}}}").fullmatch
_PREFIX = os.urandom(8).hex() + "-"
_COUNT = itertools.count(1)


def assign_request_id(request: web.BaseRequest) -> str:
    """The request's id: its valid `x-request-id`, else a new one; stored on the request."""
    given = request.headers.get(REQUEST_ID_HEADER)
    rid = given if given is not None and _VALID(given) is not None else _PREFIX + str(next(_COUNT))
    request[REQUEST_ID_KEY] = rid
    return rid


def request_id_of(request: web.BaseRequest) -> str:
    """The id assigned to `request` (assigning one if nothing did yet)."""
    rid = request.get(REQUEST_ID_KEY)
    return rid if rid is not None else assign_request_id(request)


def reseed_after_fork() -> None:
    """A new prefix for a forked process, so two workers never share ids."""
    global _PREFIX
    _PREFIX = os.urandom(8).hex() + "-"


os.register_at_fork(after_in_child=reseed_after_fork)
