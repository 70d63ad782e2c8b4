"""`routeway rollout status` as text (routeway.rollout_view), on documents the real rollout
core produced: revisions from real translation, `tick_route` driven by a fake clock with the
proxies' cumulative observation reports, then `state_to_document` with the tick's weights.

Matrix: Stable (no rollout: steps unmarked, all weight on stable, the initial history) /
Progressing with analysis (the whole summary, exactly: step markers, a timed pause's time
left, the weight bar, weights per backend and arm, metrics against max and maxRatioToStable)
/ Paused at `pause: {}` (its marker, why) / RolledBack (the failing metric, the reason in the
history, no canary traffic) / colours only when asked, ASCII symbols for a non-UTF-8 output /
a `--watch` frame at a fake time and terminal width (every line fits, the message wraps
instead, the error line) / documents with fields missing (an older or newer server) /
`-o json` / the outcome line of an action.
"""

from __future__ import annotations

import re
from typing import Any

from core_rollout import PINNED_SPEC, chat, mb, obs, policy, revision_of

from routeway.rollout import state_to_document
from routeway.rollout.observations import ArmObservation, Report, Sample
from routeway.rollout.tick import RouteTick, tick_route
from routeway.rollout_text import Style, clip
from routeway.rollout_view import (
    RolloutView,
    describe_outcome,
    render_frame,
    render_status,
    view_from_admin,
    view_from_route,
)

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
STEPS = tuple(PINNED_SPEC["strategy"]["canary"]["steps"])
V1 = [mb("a"), mb("b"), chat([("a", 100)])]
V2 = [mb("a"), mb("b"), chat([("a", 50), ("b", 50)])]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Rollout:
    """One route under the pinned policy: v1 stable at T0, then v2 rolled out; each `tick`
    adds the proxies' cumulative report (stable, canary) at that time, as the adapters read it."""

    def __init__(self) -> None:
        self.policy = policy()
        self.v1, self.v2 = revision_of(V1), revision_of(V2)
        self.snapshots = {self.v1.hash: self.v1, self.v2.hash: self.v2}
        self.samples: list[Sample] = []
        self.last: RouteTick = tick_route(None, self.v1, self.policy, T0, self.snapshots, [])
        self.totals = (obs(0), obs(0))

    def tick(
        self, now: float, stable: ArmObservation | None = None, canary: ArmObservation | None = None
    ) -> None:
        if stable is not None and canary is not None:
            self.totals = (_add(self.totals[0], stable), _add(self.totals[1], canary))
        arms = {
            ("default/chat", self.v1.hash): self.totals[0],
            ("default/chat", self.v2.hash): self.totals[1],
        }
        self.samples.append(Sample(now, Report("pod-1", T0, arms)))
        self.last = tick_route(self.last.state, self.v2, self.policy, now, self.snapshots, self.samples)

    def view(self) -> RolloutView:
        return RolloutView("default/chat", state_to_document(self.last.state, self.last.weights), STEPS, 0)


def _add(a: ArmObservation, b: ArmObservation) -> ArmObservation:
    return ArmObservation(
        success=a.success + b.success,
        server_error=a.server_error + b.server_error,
        client_error=a.client_error + b.client_error,
        upstream_rejected=a.upstream_rejected + b.upstream_rejected,
        latency=a.latency.merge(b.latency) if a.latency.bounds == b.latency.bounds else b.latency,
        ttft=a.ttft.merge(b.ttft) if a.ttft.bounds == b.ttft.bounds else b.ttft,
    )


def stable_view() -> RolloutView:
    r = Rollout()
    return RolloutView("default/chat", state_to_document(r.last.state, r.last.weights), STEPS, 0)


def progressing() -> Rollout:
    r = Rollout()
    r.tick(T0)  # the spec changes: v2 starts at 10%
    r.tick(T0 + 30, obs(900, latency=0.4, ttft=0.7), obs(100, errors=1, latency=0.4, ttft=0.9))
    return r


def test_stable_has_no_rollout_to_mark() -> None:
    text = render_status(stable_view(), now=T0 + 60)
    assert "Phase:    Stable\n" in text
    assert "Step:" not in text and "Weight:" not in text and "Canary:" not in text
    assert "Steps (no rollout in progress):\n    1. setWeight 10%\n" in text
    assert "  default/a  stable  100%\n" in text
    assert re.search(r"\n  \S+ +promoted  2026-01-01T00:00:00Z \(1m ago\)  initial revision\n", text)


def test_progressing_with_analysis_reads_as_a_whole() -> None:
    r = progressing()
    assert r.last.state.phase == "Progressing"
    v1, v2 = r.v1.hash, r.v2.hash
    text = render_status(r.view(), now=T0 + 45)
    assert text == (
        "Route:    default/chat\n"
        "Phase:    Progressing\n"
        f"Stable:   {v1}\n"
        f"Canary:   {v2}\n"
        "Step:     2/4\n"
        "Weight:   ██░░░░░░░░░░░░░░░░░░ 10% canary\n"
        "Started:  2026-01-01T00:00:00Z (45s ago)\n"
        "Deadline: 2026-01-01T00:30:00Z (in 29m15s)\n"
        "\n"
        "Steps:\n"
        "  ✔ 1. setWeight 10%\n"
        "  ► 2. pause 5m  (4m15s left)\n"
        "  ○ 3. setWeight 50%\n"
        "  ○ 4. pause (until promote)\n"
        "\n"
        "Weights:\n"
        "  BACKEND    ARM     WEIGHT\n"
        "  default/a  stable  90%\n"
        "  default/a  canary  5%\n"
        "  default/b  canary  5%\n"
        "\n"
        "Analysis: pass at 2026-01-01T00:00:30Z (15s ago)\n"
        "  requests: 100 canary, 900 stable (minRequests 100)\n"
        "  failed checks: 0 (failureLimit 0)\n"
        "  METRIC      STABLE  CANARY  RATIO  LIMIT            VERDICT\n"
        "  errorRate   0.00%   1.00%   -      max 2.00%        pass\n"
        "  latencyP95  480ms   480ms   1.00x  max 20.00s       pass\n"
        "  ttftP95     975ms   975ms   1.00x  max 1.3x stable  pass\n"
        "\n"
        "History:\n"
        "  REVISION          OUTCOME   AT                              REASON\n"
        f"  {v1}  promoted  2026-01-01T00:00:00Z (45s ago)  initial revision\n"
    )


def paused() -> Rollout:
    """Past the 5m pause and setWeight 50, waiting at `pause: {}` for a promote."""
    r = progressing()
    for n in range(2, 13):  # a good check every 30s until the timed pause is over
        r.tick(T0 + 30 * n, obs(900), obs(100))
    return r


def test_paused_marks_the_waiting_step_and_says_why() -> None:
    r = paused()
    assert r.last.state.phase == "Paused"
    text = render_status(r.view(), now=T0 + 400)
    assert "Phase:    Paused\nMessage:  step 4/4: waiting for promote\n" in text
    assert "Weight:   ██████████░░░░░░░░░░ 50% canary\n" in text
    assert "  ✔ 3. setWeight 50%\n  ‖ 4. pause (until promote)  (waiting for promote)\n" in text
    assert "  default/a  stable  50%\n  default/a  canary  25%\n  default/b  canary  25%\n" in text


def rolled_back() -> Rollout:
    r = progressing()
    r.tick(T0 + 60, obs(900), obs(100, errors=30))
    return r


def test_rolled_back_shows_the_failing_metric_and_the_reason() -> None:
    r = rolled_back()
    assert r.last.state.phase == "RolledBack"
    text = render_status(r.view(), now=T0 + 90)
    assert f"Canary:   {r.v2.hash} (rolled back)\n" in text
    assert "Message:  analysis check 1 failed (failureLimit 0): fail: errorRate" in text
    assert "Analysis: fail at 2026-01-01T00:01:00Z (30s ago)\n" in text
    assert re.search(r"\n  errorRate +0\.00% +15\.50% +- +max 2\.00% +fail\n", text)
    history = text.split("History:\n")[1].splitlines()
    assert history[1].startswith(
        f"  {r.v2.hash}  rolledBack  2026-01-01T00:01:00Z (30s ago)    analysis check 1 failed"
    )
    assert history[2].startswith(f"  {r.v1.hash}  promoted    2026-01-01T00:00:00Z (1m30s ago)")
    assert "Step:" not in text and "►" not in text  # no rollout in progress
    assert "Weights:\n  BACKEND    ARM     WEIGHT\n  default/a  stable  100%\n\n" in text  # no canary arm


def test_colour_only_when_asked_and_ascii_when_the_output_is_not_utf8() -> None:
    view = rolled_back().view()
    plain = render_status(view, now=T0 + 90)
    coloured = render_status(view, now=T0 + 90, style=Style(color=True))
    assert "\x1b[" not in plain
    assert "Phase:    \x1b[31mRolledBack\x1b[0m\n" in coloured
    assert ANSI.sub("", coloured) == plain
    ascii_text = render_status(progressing().view(), now=T0 + 45, style=Style(unicode=False))
    assert ascii_text.isascii()
    assert "  + 1. setWeight 10%\n  > 2. pause 5m  (4m15s left)\n  - 3. setWeight 50%\n" in ascii_text
    assert "Weight:   ##.................. 10% canary\n" in ascii_text


def test_a_watch_frame_fits_the_terminal_and_wraps_the_message() -> None:
    view = rolled_back().view()
    frame = render_frame(view, now=T0 + 95.5, width=60, style=Style(color=True), error="timed out")
    lines = frame.rstrip("\n").split("\n")
    assert all(len(ANSI.sub("", line)) <= 60 for line in lines)
    assert ANSI.sub("", lines[0]) == "default/chat  -  00:01:35 UTC  every 1s  -  Ctrl-C to exit"
    assert ANSI.sub("", lines[-1]) == "error: timed out (retrying)"
    message = [ANSI.sub("", line) for line in lines if line.startswith(("Message:", "          "))]
    reason = str(view.document["message"])
    assert " ".join(line[10:] for line in message) == reason  # all of it, wrapped, none cut
    assert any(line.endswith("…") or line.endswith("…\x1b[0m") for line in lines)  # the history is cut
    wide = render_frame(view, now=T0 + 95.5, width=400)
    assert wide.split("\n", 2)[2] == render_status(view, now=T0 + 95.5, width=400)


def test_clip_counts_visible_characters_only() -> None:
    assert clip("abcdef", 4) == "abc…"
    assert clip("abc", 4) == "abc"
    assert clip("\x1b[31mabcdef\x1b[0m", 4) == "\x1b[31mabc…\x1b[0m"
    assert clip("\x1b[31mab\x1b[0m", 2) == "\x1b[31mab\x1b[0m"


def test_missing_fields_are_blanks_not_errors() -> None:
    minimal = RolloutView("default/chat", {"phase": "Stable"})
    assert render_status(minimal) == "Route:    default/chat\nPhase:    Stable\nStable:   -\n"
    # the admin port's pinned fields only: `step` instead of currentStepIndex, no lastCheck, no steps
    pinned: dict[str, Any] = {
        "route": "team/chat",
        "phase": "Progressing",
        "stableRevision": "r1",
        "canaryRevision": "r2",
        "step": 1,
        "weights": [
            {"backend": "team/a", "arm": "stable", "weight": 90},
            {"backend": "team/b", "arm": "canary"},
        ],
        "analysis": [{"metric": "latencyP95", "stable": None, "canary": 2.5, "verdict": "inconclusive"}],
        "history": [{"revision": "r1", "outcome": "promoted"}],
    }
    text = render_status(view_from_admin(pinned), now=T0)
    assert "Route:    team/chat\n" in text and "Step:     2\n" in text
    assert "Weight:   ░░░░░░░░░░░░░░░░░░░░ 0% canary\n" in text
    assert re.search(r"\n  latencyP95 +- +2\.50s +- +- +inconclusive\n", text)
    assert text.endswith("History:\n  REVISION  OUTCOME   AT  REASON\n  r1        promoted\n")
    frame = render_frame(None, now=T0, width=80, error="cannot reach")
    assert "error: cannot reach (retrying)" in frame


def test_views_from_the_cluster_and_the_admin_port_print_the_same_json() -> None:
    document = progressing().view().document
    obj = {
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {"strategy": PINNED_SPEC["strategy"]},
        "status": {"rollout": document},
    }
    from_cluster = view_from_route(obj)
    assert from_cluster is not None
    assert from_cluster.steps == STEPS and from_cluster.failure_limit == 0
    from_admin = view_from_admin({"route": "default/chat", **document, "steps": list(STEPS)})
    assert from_cluster.to_json() == from_admin.to_json()
    assert from_cluster.to_json()["route"] == "default/chat"
    assert view_from_route({"metadata": {"name": "chat"}, "status": {}}) is None


def test_the_outcome_line_of_an_action() -> None:
    assert describe_outcome("promote", paused().view()) == (
        "default/chat: promote done, phase Paused, step 4/4, canary 50%, step 4/4: waiting for promote"
    )
    assert describe_outcome("promote-full", stable_view()) == "default/chat: promote-full done, phase Stable"
