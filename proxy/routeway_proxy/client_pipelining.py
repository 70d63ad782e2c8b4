"""How many pipelined requests aiohttp has parsed on a connection and not yet started: the seam
that lets a half-closed connection answer all of them (client_conn.py).

Why: a client may pipeline several requests and then shut down its write side
(`shutdown(SHUT_WR)`). Asking aiohttp to close the connection at that EOF (`close()`, its
public API) makes its request loop leave after the current request, so every request queued
behind it goes unanswered. Closing instead once the last queued request is answered needs
the queue's length, which aiohttp keeps only in a private attribute (`_messages`, a deque of
parsed requests). So it sits behind a `Seam` (fastpaths.py): used when the installed aiohttp
still has it (checked once per process, and again on each use that it is a deque), otherwise
— or with `ROUTEWAY_FAST_PATHS=off` — the public `close()` at EOF, which answers the request
under way and drops the rest, as the README says.
"""

from __future__ import annotations

from collections import deque

from aiohttp import web

from routeway_proxy.fastpaths import Choice, Seam, fast_paths_refusal

__all__ = ["QUEUE_SEAM", "queued_requests"]

_QUEUE = "_messages"


def _choose() -> Choice[bool]:
    refusal = fast_paths_refusal()
    if refusal is not None:
        return Choice(False, f"half-close after pipelined requests: answers only the current one ({refusal})")
    slots = getattr(web.RequestHandler, "__slots__", ())
    if _QUEUE not in slots:
        return Choice(
            False,
            "half-close after pipelined requests: aiohttp's RequestHandler has no request queue "
            f"({_QUEUE}); answers only the current one",
            failed=True,
        )
    return Choice(True, "half-close after pipelined requests: every queued request is answered")


QUEUE_SEAM: Seam[bool] = Seam(_choose)


def queued_requests(handler: web.RequestHandler) -> int | None:
    """Requests parsed on `handler`'s connection and not yet started, or None when this cannot
    be known (the seam chose the public path, or the queue is not what it was)."""
    if not QUEUE_SEAM.get():
        return None
    queue = getattr(handler, _QUEUE, None)
    return len(queue) if isinstance(queue, deque) else None
