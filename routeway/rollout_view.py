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

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeway.rollout_text import (
    PLAIN,
    Style,
    as_float,
    as_int,
    as_list,
    as_mapping,
    as_opt_float,
    as_seconds,
    as_steps,
    as_time,
    clip,
    duration_text,
    fmt_num,
    fmt_span,
    fmt_when,
    format_clock,
    metric_value,
    table,
)

BAR_WIDTH = 20
LABEL_WIDTH = 10
PHASE_COLOURS = {"Stable": "green", "Progressing": "cyan", "Paused": "yellow", "RolledBack": "red"}
VERDICT_COLOURS = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
IN_PROGRESS = ("Progressing", "Paused")


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
    canary = as_mapping(as_mapping(entry.get("strategy")).get("canary"))
    steps = entry.get("steps", canary.get("steps"))
    limit = as_mapping(canary.get("analysis")).get("failureLimit")
    return RolloutView(
        route=str(entry.get("route", "")),
        document=entry,
        steps=as_steps(steps),
        failure_limit=int(limit) if isinstance(limit, int) else None,
    )


def view_from_route(obj: Mapping[str, Any]) -> RolloutView | None:
    """A ModelRoute object: `status.rollout` with the spec's steps; None while it has no
    `status.rollout` (no operator has recorded one yet)."""
    meta = as_mapping(obj.get("metadata"))
    document = as_mapping(obj.get("status")).get("rollout")
    if not isinstance(document, Mapping):
        return None
    canary = as_mapping(as_mapping(as_mapping(obj.get("spec")).get("strategy")).get("canary"))
    limit = as_mapping(canary.get("analysis")).get("failureLimit")
    return RolloutView(
        route=f"{meta.get('namespace', 'default')}/{meta.get('name', '')}",
        document=document,
        steps=as_steps(canary.get("steps")) if canary else None,
        failure_limit=int(limit) if isinstance(limit, int) else (0 if canary.get("analysis") else None),
    )


# ---------------------------------------------------------------------------- rendering


def render_status(
    view: RolloutView, *, now: float | None = None, style: Style = PLAIN, width: int | None = None
) -> str:
    """The readable summary: header, steps, weights, analysis, history. `now` (unix seconds)
    adds ages ("5m ago") and a timed pause's time left; without it only absolute times show.
    `width` wraps the message (why the phase is what it is: never cut off)."""
    doc = view.document
    lines = _header(view, now, style, width)
    lines += _steps_block(view, now, style)
    lines += _weights_block(as_list(doc.get("weights")), style)
    lines += _analysis_block(view, now, style)
    lines += _history_block(as_list(doc.get("history")), now, style)
    return "\n".join(lines) + "\n"


def render_frame(
    view: RolloutView | None,
    *,
    now: float,
    width: int,
    style: Style = PLAIN,
    interval: float = 1.0,
    error: str | None = None,
) -> str:
    """One `--watch` frame: a title line with the time, the summary (or only the error while
    nothing was read yet), the last refresh's error if any; every line cut to `width`."""
    clock = (format_clock(now) or "").removesuffix("Z").split("T")[-1] + " UTC"
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
        parts.append(f"canary {fmt_num(as_float(doc.get('canaryWeight')))}%")
    if doc.get("message"):
        parts.append(str(doc["message"]))
    return ", ".join(parts)


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
    started = as_time(doc.get("startedAt"))
    if started is not None and phase in IN_PROGRESS:
        rows.append(("Started", fmt_when(started, now)))
    deadline = as_time(doc.get("deadlineAt"))
    if deadline is not None and phase == "Progressing":
        rows.append(("Deadline", fmt_when(deadline, now, future=True)))
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
    index = as_int(view.document.get("currentStepIndex", view.document.get("step")))
    total = len(view.steps) if view.steps is not None else None
    if index is None:
        return str(view.document.get("step") or "?")
    shown = min(index + 1, total) if total else index + 1
    return f"{shown}/{total}" if total else str(shown)


def _weight_bar(view: RolloutView, style: Style) -> str:
    set_weight = as_float(view.document.get("canaryWeight"))
    filled = round(BAR_WIDTH * min(max(set_weight, 0.0), 100.0) / 100)
    bar = style.paint(style.symbol("full") * filled, "cyan") + style.symbol("empty") * (BAR_WIDTH - filled)
    text = f"{bar} {fmt_num(set_weight)}% canary"
    serving = _canary_share(as_list(view.document.get("weights")))
    if serving is not None and abs(serving - set_weight) > 0.005:
        text += f" (serving {fmt_num(serving)}%)"
    return text


def _canary_share(weights: Sequence[Mapping[str, Any]]) -> float | None:
    canary = [w for w in weights if w.get("arm") == "canary"]
    return sum(as_float(w.get("weight")) for w in canary) if canary else None


def _steps_block(view: RolloutView, now: float | None, style: Style) -> list[str]:
    if not view.steps:
        return []
    doc = view.document
    running = view.phase in IN_PROGRESS
    current = as_int(doc.get("currentStepIndex")) if running else None
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
        duration = as_mapping(step.get("pause")).get("duration")
        return f"pause {duration_text(duration)}" if duration is not None else "pause (until promote)"
    return str(dict(step))


def _step_note(step: Mapping[str, Any], doc: Mapping[str, Any], now: float | None, paused: bool) -> str:
    if paused:
        return "  (waiting for promote)"
    duration = as_seconds(as_mapping(step.get("pause")).get("duration")) if "pause" in step else None
    started = as_time(doc.get("stepStartedAt"))
    if duration is None or started is None or now is None:
        return ""
    return f"  ({fmt_span(max(started + duration - now, 0.0))} left)"


def _weights_block(weights: Sequence[Mapping[str, Any]], style: Style) -> list[str]:
    if not weights:
        return []
    rows = [
        [
            str(w.get("backend", "")),
            str(w.get("arm", "")),
            f"{fmt_num(as_float(w.get('weight')))}%",
        ]
        for w in weights
    ]
    return ["", "Weights:", *table(["BACKEND", "ARM", "WEIGHT"], rows, style)]


def _analysis_block(view: RolloutView, now: float | None, style: Style) -> list[str]:
    doc = view.document
    metrics = as_list(doc.get("analysis"))
    last = as_mapping(doc.get("lastCheck"))
    failed = as_int(doc.get("failedChecks"))
    if not metrics and not last:
        return []
    head = "Analysis:"
    detail: list[str] = []
    if last:
        verdict = str(last.get("verdict", ""))
        at = as_time(last.get("at"))
        head += (
            " "
            + style.paint(verdict, VERDICT_COLOURS.get(verdict))
            + (f" at {fmt_when(at, now)}" if at else "")
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
        lines += table(["METRIC", "STABLE", "CANARY", "RATIO", "LIMIT", "VERDICT"], rows, style)
    return lines


def _metric_row(m: Mapping[str, Any], style: Style) -> list[str]:
    name = str(m.get("metric", ""))
    stable, canary = as_opt_float(m.get("stable")), as_opt_float(m.get("canary"))
    limits = []
    if m.get("max") is not None:
        limits.append(f"max {metric_value(name, as_opt_float(m['max']), style)}")
    if m.get("maxRatioToStable") is not None:
        limits.append(f"max {fmt_num(as_float(m['maxRatioToStable']))}x stable")
    ratio = style.dash
    if stable is not None and canary is not None and stable > 0:
        ratio = f"{canary / stable:.2f}x"
    verdict = str(m.get("verdict", ""))
    return [
        name,
        metric_value(name, stable, style),
        metric_value(name, canary, style),
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
        at = as_time(entry.get("at"))
        reason = str(entry.get("reason", ""))
        if entry.get("restorable") is False:
            reason = f"(not restorable) {reason}"
        rows.append(
            [
                str(entry.get("revision", "")),
                style.paint(outcome, colour),
                fmt_when(at, now) if at else "",
                reason,
            ]
        )
    return ["", "History:", *table(["REVISION", "OUTCOME", "AT", "REASON"], rows, style)]
