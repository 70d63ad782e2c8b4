"""Text primitives of `routeway rollout status`: styling, clipping, tables, and tolerant
readers of document values (a missing or malformed field reads as None, never an error).

Split from routeway.rollout_view, which composes these into the views; pure like it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routeway.durations import parse_duration
from routeway.rollout.document import format_time, parse_time

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COLOURS = {"green": "32", "yellow": "33", "red": "31", "cyan": "36", "bold": "1", "dim": "2"}


@dataclass(frozen=True, slots=True)
class Style:
    """How to draw: ANSI colours (a TTY without NO_COLOR) and Unicode symbols (a UTF-8 output)."""

    color: bool = False
    unicode: bool = True

    def paint(self, text: str, colour: str | None) -> str:
        if not self.color or colour is None or not text:
            return text
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"

    def symbol(self, name: str) -> str:
        fancy = {"done": "✔", "current": "►", "paused": "‖", "pending": "○", "full": "█", "empty": "░"}
        plain = {"done": "+", "current": ">", "paused": "=", "pending": "-", "full": "#", "empty": "."}
        return (fancy if self.unicode else plain)[name]

    dash = "-"  # what a missing value shows


PLAIN = Style()
"""No colour, Unicode symbols: the default style."""


def clip(line: str, width: int) -> str:
    """`line` cut to `width` visible characters; ANSI colour codes do not count and are
    closed when the cut falls inside a coloured span."""
    if width <= 0 or len(_ANSI.sub("", line)) <= width:
        return line
    out: list[str] = []
    visible = 0
    pos = 0
    while pos < len(line) and visible < width - 1:
        match = _ANSI.match(line, pos)
        if match:
            out.append(match.group())
            pos = match.end()
            continue
        out.append(line[pos])
        visible += 1
        pos += 1
    coloured = "\x1b[" in line
    return "".join(out) + "…" + ("\x1b[0m" if coloured else "")


def table(header: list[str], rows: Iterable[list[str]], style: Style) -> list[str]:
    """Left-aligned columns two spaces apart, indented; colour codes do not count as width;
    the last column is not padded."""
    all_rows = [header, *rows]
    widths = [max(len(_ANSI.sub("", r[i])) for r in all_rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(all_rows):
        cells = [cell + " " * (widths[i] - len(_ANSI.sub("", cell))) for i, cell in enumerate(row[:-1])]
        line = ("  " + "  ".join([*cells, row[-1]])).rstrip()
        out.append(style.paint(line, "dim") if n == 0 else line)
    return out


# ---------------------------------------------------------------------------- values


def metric_value(metric: str, value: float | None, style: Style) -> str:
    if value is None:
        return style.dash
    if metric == "errorRate":
        return f"{value * 100:.2f}%"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.2f}s"


def fmt_when(at: float | None, now: float | None, *, future: bool = False) -> str:
    text = format_clock(at) or ""
    if at is None or now is None:
        return text
    delta = at - now if future else now - at
    return (
        f"{text} (in {fmt_span(max(delta, 0.0))})" if future else f"{text} ({fmt_span(max(delta, 0.0))} ago)"
    )


def format_clock(at: float | None) -> str | None:
    text = format_time(at)
    return text.split(".")[0] + "Z" if text and "." in text else text


def fmt_span(seconds: float) -> str:
    """5s, 4m10s, 2h3m, 3d4h: the two largest units, like kubectl's ages."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def duration_text(value: Any) -> str:
    return f"{fmt_num(float(value))}s" if isinstance(value, int | float) else str(value)


def as_seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value)) if value is not None else None
    except ValueError:
        return None


def as_time(value: Any) -> float | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def fmt_num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def as_float(value: Any) -> float:
    return as_opt_float(value) or 0.0


def as_opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list | tuple) else []


def as_steps(value: Any) -> tuple[Mapping[str, Any], ...] | None:
    return tuple(as_list(value)) if isinstance(value, list | tuple) else None
