"""Limit: reserve a request's share of its client's and route's request and token budgets
before it is sent, and settle the reservation from the upstream's usage afterwards
(`settle.py`). Seam: no limits exist yet, so nothing is reserved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeway_proxy.table import RouteEntry


def reserve(route: RouteEntry, body: dict[str, Any]) -> None:
    """Admit the request under its limits (429 when over). Nothing to reserve today."""
