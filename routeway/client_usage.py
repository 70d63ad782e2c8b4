"""A ModelClient's usage as the operator shows it in `status.usage` (pure: no clock, no I/O).

Where the numbers come from: each proxy pod counts, per client, the requests, tokens and cost
of the current minute and UTC day, and serves them on its admin port as `GET /usage`:

    {"clients": [{"client": "ns/name", "currency": "USD",
                  "minute": {"start", "requests", "promptTokens", "completionTokens", "cost"},
                  "day": {...}}]}

(`start`: RFC 3339 or unix seconds; `cost`: a decimal number or string). The operator reads
every ready pod of a gateway (routeway_operator.proxies, at most every `usage_interval`), and
here the pods' reports are summed per client and window (`sum_usage`) and written as a status
document (`usage_document`). Rules:

- Only current windows count: a window whose start is more than its length (plus a small
  allowance for clock skew between pods and operator) before the read is over and left out,
  so an idle client shows no minute rather than an old one; of the pods' current windows the
  newest start wins (a pod that already rolled over to the next minute is not mixed with one
  that has not).
- Costs are added as decimals; when pods report different currencies there is no honest sum,
  and the cost and currency are left out.
- `settle_usage` keeps the previous document (with its `observedAt`) when the numbers did not
  change, so a read that saw nothing new writes nothing (status writes are not free).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MINUTE = 60.0
DAY = 86_400.0
SKEW = 5.0  # seconds a pod's clock may be ahead of or behind the operator's


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # unix seconds
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = Decimal(0)

    def plus(self, other: Window) -> Window:
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Window(
            self.start,
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
        )


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """One client's usage as one pod reported it, or as summed over pods."""

    minute: Window | None = None
    day: Window | None = None
    currency: str | None = None


UsageReport = Mapping[str, ClientUsage]
"""One pod's `/usage`, by client id (`namespace/name`)."""


# ---------------------------------------------------------------------------- parsing


def usage_from_json(doc: Any) -> dict[str, ClientUsage]:
    """A pod's `/usage` document; ValueError when it is not one."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("clients"), list):
        raise ValueError("a usage report is an object with a list `clients`")
    out: dict[str, ClientUsage] = {}
    for item in doc["clients"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("client"), str):
            raise ValueError("each usage entry names its `client` (namespace/name)")
        currency = item.get("currency")
        out[item["client"]] = ClientUsage(
            _window(item.get("minute")),
            _window(item.get("day")),
            currency if isinstance(currency, str) and currency else None,
        )
    return out


def _window(doc: Any) -> Window | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise ValueError("a usage window is an object")
    return Window(
        _time(doc.get("start")),
        _count(doc, "requests"),
        _count(doc, "promptTokens"),
        _count(doc, "completionTokens"),
        _decimal(doc.get("cost")),
    )


def _time(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"window start {value!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.timestamp()
    raise ValueError("a usage window has a `start`")


def _count(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a count")
    return value


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("cost must be a decimal number")
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"cost {value!r} is not a decimal number") from None
    if not cost.is_finite() or cost < 0:
        raise ValueError(f"cost {value!r} is not a decimal number")
    return cost


# ---------------------------------------------------------------------------- summing


def sum_usage(reports: Iterable[UsageReport], now: float) -> dict[str, ClientUsage]:
    """Per client, the pods' current windows summed (see the module's rules)."""
    by_client: dict[str, list[ClientUsage]] = {}
    for report in reports:
        for client, usage in report.items():
            by_client.setdefault(client, []).append(usage)
    out: dict[str, ClientUsage] = {}
    for client, usages in sorted(by_client.items()):
        currencies = {u.currency for u in usages if u.currency is not None}
        mixed = len(currencies) > 1
        minute = _sum_current([u.minute for u in usages], MINUTE, now)
        day = _sum_current([u.day for u in usages], DAY, now)
        if mixed:
            minute = _without_cost(minute)
            day = _without_cost(day)
        out[client] = ClientUsage(minute, day, None if mixed else next(iter(currencies), None))
    return out


def _sum_current(windows: Iterable[Window | None], length: float, now: float) -> Window | None:
    current = [w for w in windows if w is not None and now - length - SKEW < w.start <= now + SKEW]
    if not current:
        return None
    newest = max(w.start for w in current)
    total = Window(newest)
    for window in current:
        if window.start == newest:
            total = total.plus(window)
    return total


def _without_cost(window: Window | None) -> Window | None:
    if window is None:
        return None
    return Window(window.start, window.requests, window.prompt_tokens, window.completion_tokens, None)


# ---------------------------------------------------------------------------- documents


def rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_cost(cost: Decimal) -> str:
    """A decimal without exponent or trailing zeros: `0.0129`, `4.5`, `0`."""
    text = format(cost.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def window_document(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {
        "start": rfc3339(window.start),
        "requests": window.requests,
        "promptTokens": window.prompt_tokens,
        "completionTokens": window.completion_tokens,
        "cost": format_cost(window.cost) if window.cost is not None else None,
    }


def usage_document(usage: ClientUsage | None, observed_at: str) -> dict[str, Any]:
    """`status.usage` for one client (None-valued fields are absent once written)."""
    usage = usage or ClientUsage()
    return {
        "minute": window_document(usage.minute),
        "day": window_document(usage.day),
        "currency": usage.currency,
        "observedAt": observed_at,
    }


def settle_usage(previous: Any, desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired`, or `previous` unchanged when only `observedAt` would differ."""
    if isinstance(previous, Mapping) and _numbers(previous) == _numbers(desired):
        return dict(previous)
    return dict(desired)


def _numbers(doc: Mapping[str, Any]) -> Any:
    return _compact({k: v for k, v in doc.items() if k != "observedAt"})


def _compact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    return value
