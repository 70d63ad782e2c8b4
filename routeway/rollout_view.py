"""`routeway rollout status` as text: a rollout document in, lines out.

Pure (no terminal, no clock, no I/O), so every view — the one-shot summary, a `--watch`
frame at a given time and terminal width, an action's outcome — is tested on documents the
real rollout core produced. The CLI (routeway.rollout_cli) only fetches the document and
prints what these functions return.

The document is `status.rollout` in the cluster or one entry of `GET /rollouts` from
`routeway serve`'s admin port (routeway.rollout.document.state_to_document plus the route's
name). Everything but `phase` is optional here: a server one release older or newer than
the CLI still shows what it has, and a missing field is a blank, never an error.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeway.durations import parse_duration
from routeway.rollout.document import format_time, parse_time

BAR_WIDTH = 20
LABEL_WIDTH = 10
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COLOURS = {"green": "32", "yellow": "33", "red": "31", "cyan": "36", "bold": "1", "dim": "2"}
PHASE_COLOURS = {"Stable": "green", "Progressing": "cyan", "Paused": "yellow", "RolledBack": "red"}
VERDICT_COLOURS = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
IN_PROGRESS = ("Progressing", "Paused")


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


@dataclass(frozen=True, slots=True)
class RolloutView:
    """One route's rollout as the CLI got it: the document, and the strategy's steps when known
    (the spec's `strategy.canary.steps` as written: `{"setWeight": 10}`, `{"pause": {...}}`)."""

    route: str  # namespace/name
    document: Mapping[str, Any]
    steps: tuple[Mapping[str, Any], ...] | None = None
    failure_limit: int | None = None

    @property
    def phase(self) -> str:
        return str(self.document.get("phase") or "Unknown")

    def to_json(self) -> dict[str, Any]:
        """What `-o json` prints: the document with the route's name (and its steps if the
        document had none), the same shape from the cluster and from `routeway serve`."""
        out: dict[str, Any] = {"route": self.route, **self.document}
        if self.steps is not None and "steps" not in out:
            out["steps"] = [dict(s) for s in self.steps]
        return out


def view_from_admin(entry: Mapping[str, Any]) -> RolloutView:
    """An entry of `GET /rollouts`; steps from `steps` or `strategy.canary.steps` if served."""
    canary = _mapping(_mapping(entry.get("strategy")).get("canary"))
    steps = entry.get("steps", canary.get("steps"))
    limit = _mapping(canary.get("analysis")).get("failureLimit")
    return RolloutView(
        route=str(entry.get("route", "")),
        document=entry,
        steps=_steps(steps),
        failure_limit=int(limit) if isinstance(limit, int) else None,
    )


def view_from_route(obj: Mapping[str, Any]) -> RolloutView | None:
    """A ModelRoute object: `status.rollout` with the spec's steps; None while it has no
    `status.rollout` (no operator has recorded one yet)."""
    meta = _mapping(obj.get("metadata"))
    document = _mapping(obj.get("status")).get("rollout")
    if not isinstance(document, Mapping):
        return None
    canary = _mapping(_mapping(_mapping(obj.get("spec")).get("strategy")).get("canary"))
    limit = _mapping(canary.get("analysis")).get("failureLimit")
    return RolloutView(
        route=f"{meta.get('namespace', 'default')}/{meta.get('name', '')}",
        document=document,
        steps=_steps(canary.get("steps")) if canary else None,
        failure_limit=int(limit) if isinstance(limit, int) else (0 if canary.get("analysis") else None),
    )


# ---------------------------------------------------------------------------- rendering


def render_status(
    view: RolloutView, *, now: float | None = None, style: Style = Style(), width: int | None = None
) -> str:
    """The readable summary: header, steps, weights, analysis, history. `now` (unix seconds)
    adds ages ("5m ago") and a timed pause's time left; without it only absolute times show.
    `width` wraps the message (why the phase is what it is: never cut off)."""
    doc = view.document
    lines = _header(view, now, style, width)
    lines += _steps_block(view, now, style)
    lines += _weights_block(_list(doc.get("weights")), style)
    lines += _analysis_block(view, now, style)
    lines += _history_block(_list(doc.get("history")), now, style)
    return "\n".join(lines) + "\n"


def render_frame(
    view: RolloutView | None,
    *,
    now: float,
    width: int,
    style: Style = Style(),
    interval: float = 1.0,
    error: str | None = None,
) -> str:
    """One `--watch` frame: a title line with the time, the summary (or only the error while
    nothing was read yet), the last refresh's error if any; every line cut to `width`."""
    clock = (_format_clock(now) or "").removesuffix("Z").split("T")[-1] + " UTC"
    name = view.route if view is not None else ""
    title = f"{name}  {style.dash}  {clock}  every {interval:g}s  {style.dash}  Ctrl-C to exit"
    body = (
        render_status(view, now=now, style=style, width=width).rstrip("\n").split("\n")
        if view is not None
        else []
    )
    lines = [style.paint(title, "dim"), "", *body]
    if error:
        lines += ["", style.paint(f"error: {error} (retrying)", "red")]
    return "\n".join(clip(line, width) for line in lines) + "\n"


def describe_outcome(action: str, view: RolloutView) -> str:
    """One line after an action: the route's phase, step and canary weight now."""
    doc = view.document
    parts = [f"{view.route}: {action} done", f"phase {view.phase}"]
    if view.phase in IN_PROGRESS:
        parts.append(f"step {_step_position(view)}")
        parts.append(f"canary {_num(_float(doc.get('canaryWeight')))}%")
    if doc.get("message"):
        parts.append(str(doc["message"]))
    return ", ".join(parts)


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


# ---------------------------------------------------------------------------- blocks


def _header(view: RolloutView, now: float | None, style: Style, width: int | None) -> list[str]:
    doc = view.document
    phase = view.phase
    rows = [
        ("Route", view.route),
        ("Phase", style.paint(phase, PHASE_COLOURS.get(phase))),
    ]
    if doc.get("message"):
        rows.append(("Message", str(doc["message"])))
    rows.append(("Stable", str(doc.get("stableRevision") or style.dash)))
    canary = doc.get("canaryRevision")
    if canary:
        rolled = " (rolled back)" if phase == "RolledBack" else ""
        rows.append(("Canary", f"{canary}{rolled}"))
    if phase in IN_PROGRESS:
        rows.append(("Step", _step_position(view)))
        rows.append(("Weight", _weight_bar(view, style)))
    started = _time(doc.get("startedAt"))
    if started is not None and phase in IN_PROGRESS:
        rows.append(("Started", _when(started, now)))
    deadline = _time(doc.get("deadlineAt"))
    if deadline is not None and phase == "Progressing":
        rows.append(("Deadline", _when(deadline, now, future=True)))
    lines = []
    for label, value in rows:
        if label == "Message" and width is not None and width > LABEL_WIDTH + 20:
            wrapped = textwrap.wrap(value, width - LABEL_WIDTH) or [""]
            lines.append(f"{label + ':':<{LABEL_WIDTH}}{wrapped[0]}")
            lines += [" " * LABEL_WIDTH + more for more in wrapped[1:]]
        else:
            lines.append(f"{label + ':':<{LABEL_WIDTH}}{value}")
    return lines


def _step_position(view: RolloutView) -> str:
    index = _int(view.document.get("currentStepIndex", view.document.get("step")))
    total = len(view.steps) if view.steps is not None else None
    if index is None:
        return str(view.document.get("step") or "?")
    shown = min(index + 1, total) if total else index + 1
    return f"{shown}/{total}" if total else str(shown)


def _weight_bar(view: RolloutView, style: Style) -> str:
    set_weight = _float(view.document.get("canaryWeight"))
    filled = round(BAR_WIDTH * min(max(set_weight, 0.0), 100.0) / 100)
    bar = style.paint(style.symbol("full") * filled, "cyan") + style.symbol("empty") * (BAR_WIDTH - filled)
    text = f"{bar} {_num(set_weight)}% canary"
    serving = _canary_share(_list(view.document.get("weights")))
    if serving is not None and abs(serving - set_weight) > 0.005:
        text += f" (serving {_num(serving)}%)"
    return text


def _canary_share(weights: Sequence[Mapping[str, Any]]) -> float | None:
    canary = [w for w in weights if w.get("arm") == "canary"]
    return sum(_float(w.get("weight")) for w in canary) if canary else None


def _steps_block(view: RolloutView, now: float | None, style: Style) -> list[str]:
    if not view.steps:
        return []
    doc = view.document
    running = view.phase in IN_PROGRESS
    current = _int(doc.get("currentStepIndex")) if running else None
    lines = ["", "Steps:" if running else "Steps (no rollout in progress):"]
    for i, step in enumerate(view.steps):
        text = _describe_step(step)
        if current is None:
            marker = " "
        elif i < current:
            marker = style.paint(style.symbol("done"), "green")
        elif i == current:
            paused = view.phase == "Paused"
            marker = style.paint(
                style.symbol("paused" if paused else "current"), "yellow" if paused else "cyan"
            )
            text = style.paint(text, "bold") + _step_note(step, doc, now, paused)
        else:
            marker = style.paint(style.symbol("pending"), "dim")
        lines.append(f"  {marker} {i + 1}. {text}")
    return lines


def _describe_step(step: Mapping[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = _mapping(step.get("pause")).get("duration")
        return f"pause {_duration_text(duration)}" if duration is not None else "pause (until promote)"
    return str(dict(step))


def _step_note(step: Mapping[str, Any], doc: Mapping[str, Any], now: float | None, paused: bool) -> str:
    if paused:
        return "  (waiting for promote)"
    duration = _seconds(_mapping(step.get("pause")).get("duration")) if "pause" in step else None
    started = _time(doc.get("stepStartedAt"))
    if duration is None or started is None or now is None:
        return ""
    return f"  ({_span(max(started + duration - now, 0.0))} left)"


def _weights_block(weights: Sequence[Mapping[str, Any]], style: Style) -> list[str]:
    if not weights:
        return []
    rows = [
        [
            str(w.get("backend", "")),
            str(w.get("arm", "")),
            f"{_num(_float(w.get('weight')))}%",
        ]
        for w in weights
    ]
    return ["", "Weights:", *_table(["BACKEND", "ARM", "WEIGHT"], rows, style)]


def _analysis_block(view: RolloutView, now: float | None, style: Style) -> list[str]:
    doc = view.document
    metrics = _list(doc.get("analysis"))
    last = _mapping(doc.get("lastCheck"))
    failed = _int(doc.get("failedChecks"))
    if not metrics and not last:
        return []
    head = "Analysis:"
    detail: list[str] = []
    if last:
        verdict = str(last.get("verdict", ""))
        at = _time(last.get("at"))
        head += (
            " " + style.paint(verdict, VERDICT_COLOURS.get(verdict)) + (f" at {_when(at, now)}" if at else "")
        )
        if last.get("reason"):
            detail.append(f"  reason: {last['reason']}")
        if "canaryRequests" in last:
            counts = (
                f"  requests: {last.get('canaryRequests')} canary, {last.get('stableRequests', '?')} stable"
            )
            if last.get("minRequests") is not None:
                counts += f" (minRequests {last['minRequests']})"
            detail.append(counts)
    if failed is not None:
        limit = f" (failureLimit {view.failure_limit})" if view.failure_limit is not None else ""
        detail.append(f"  failed checks: {failed}{limit}")
    lines = ["", head, *detail]
    rows = [_metric_row(m, style) for m in metrics]
    if rows:
        lines += _table(["METRIC", "STABLE", "CANARY", "RATIO", "LIMIT", "VERDICT"], rows, style)
    return lines


def _metric_row(m: Mapping[str, Any], style: Style) -> list[str]:
    name = str(m.get("metric", ""))
    stable, canary = _opt_float(m.get("stable")), _opt_float(m.get("canary"))
    limits = []
    if m.get("max") is not None:
        limits.append(f"max {_metric_value(name, _opt_float(m['max']), style)}")
    if m.get("maxRatioToStable") is not None:
        limits.append(f"max {_num(_float(m['maxRatioToStable']))}x stable")
    ratio = style.dash
    if stable is not None and canary is not None and stable > 0:
        ratio = f"{canary / stable:.2f}x"
    verdict = str(m.get("verdict", ""))
    return [
        name,
        _metric_value(name, stable, style),
        _metric_value(name, canary, style),
        ratio,
        ", ".join(limits) or style.dash,
        style.paint(verdict, VERDICT_COLOURS.get(verdict)),
    ]


def _history_block(history: Sequence[Mapping[str, Any]], now: float | None, style: Style) -> list[str]:
    if not history:
        return []
    rows = []
    for entry in history:
        outcome = str(entry.get("outcome", ""))
        colour = {"promoted": "green", "rolledBack": "red"}.get(outcome)
        at = _time(entry.get("at"))
        reason = str(entry.get("reason", ""))
        if entry.get("restorable") is False:
            reason = f"(not restorable) {reason}"
        rows.append(
            [
                str(entry.get("revision", "")),
                style.paint(outcome, colour),
                _when(at, now) if at else "",
                reason,
            ]
        )
    return ["", "History:", *_table(["REVISION", "OUTCOME", "AT", "REASON"], rows, style)]


def _table(header: list[str], rows: Iterable[list[str]], style: Style) -> list[str]:
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


def _metric_value(metric: str, value: float | None, style: Style) -> str:
    if value is None:
        return style.dash
    if metric == "errorRate":
        return f"{value * 100:.2f}%"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.2f}s"


def _when(at: float | None, now: float | None, *, future: bool = False) -> str:
    text = _format_clock(at) or ""
    if at is None or now is None:
        return text
    delta = at - now if future else now - at
    return f"{text} (in {_span(max(delta, 0.0))})" if future else f"{text} ({_span(max(delta, 0.0))} ago)"


def _format_clock(at: float | None) -> str | None:
    text = format_time(at)
    return text.split(".")[0] + "Z" if text and "." in text else text


def _span(seconds: float) -> str:
    """5s, 4m10s, 2h3m, 3d4h: the two largest units, like kubectl's ages."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def _duration_text(value: Any) -> str:
    return f"{_num(float(value))}s" if isinstance(value, int | float) else str(value)


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value)) if value is not None else None
    except ValueError:
        return None


def _time(value: Any) -> float | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _float(value: Any) -> float:
    return _opt_float(value) or 0.0


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list | tuple) else []


def _steps(value: Any) -> tuple[Mapping[str, Any], ...] | None:
    return tuple(_list(value)) if isinstance(value, list | tuple) else None
