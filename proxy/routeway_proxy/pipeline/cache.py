"""Cache: answer a repeated request from the response cache before any backend is chosen,
and fill the cache when a cacheable answer ends (`settle.py`). Seam: there is no cache yet,
so every lookup misses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from routeway_proxy.table import RouteEntry


def lookup(route: RouteEntry, body: dict[str, Any]) -> web.StreamResponse | None:
    """A cached answer for this request, or None. Always None today."""
    return None
