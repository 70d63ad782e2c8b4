"""Progressive delivery of route revisions: one pure state machine for two thin adapters.

Pure like the rest of the core (no I/O, no clock, no kopf, aiohttp or Kubernetes client:
`.importlinter` enforces it), so `routeway serve` and the operator run the very same rollout
and the tests drive it with a fake clock.

- `revision`: a route revision, the content-hashed snapshot of what a route serves.
- `strategy`: the rollout policy (steps, analysis, paused, deadline, history limit) and the
  adapter point `policy_from_spec` from the ModelRoute spec document.
- `observations`: what proxies report per (route, revision) and how cumulative reports become
  one window of traffic; `analysis`: `judge`, the verdict on one window.
- `state`: the state, inputs, events; `machine`: `step`, when each transition happens;
  `lifecycle`: the transitions themselves (start, promote, roll back, pause); `document`: the
  state as `status.rollout` JSON; `weights`: effective per-backend weights and sticky arms.
- `serving`: a rendered ProxyConfig with each route's arms put in; `tick`: one route's
  adapter loop body (`tick_route`), shared by `routeway serve` and the operator.

An adapter's loop for one route: build the desired revision from the translated config
(`build_revision`), read the policy (`policy_from_spec`), gather the analysis window's
observations when `analysis_due`, `step`, store the state, serve `state.stable` and
`state.serving_canary` at `canary_share(...)`, post the events and come back at `wake_at`.
"""

from routeway.rollout.analysis import Judgement, MetricResult, Verdict, judge
from routeway.rollout.document import state_from_document, state_to_document
from routeway.rollout.machine import analysis_due, analysis_window, initial_state, step, wake_at
from routeway.rollout.observations import ArmObservation, Histogram, Report, Sample, window_observations
from routeway.rollout.revision import RevisionRef, RouteRevision, build_revision
from routeway.rollout.state import Action, Decision, Event, HistoryEntry, Inputs, RolloutState
from routeway.rollout.strategy import (
    Analysis,
    Canary,
    MetricCheck,
    Pause,
    RolloutPolicy,
    SetWeight,
    policy_from_spec,
)
from routeway.rollout.weights import WeightShare, arm_for_key, canary_share, effective_weights

__all__ = [
    "Action",
    "Analysis",
    "ArmObservation",
    "Canary",
    "Decision",
    "Event",
    "Histogram",
    "HistoryEntry",
    "Inputs",
    "Judgement",
    "MetricCheck",
    "MetricResult",
    "Pause",
    "Report",
    "RevisionRef",
    "RolloutPolicy",
    "RolloutState",
    "RouteRevision",
    "Sample",
    "SetWeight",
    "Verdict",
    "WeightShare",
    "analysis_due",
    "analysis_window",
    "arm_for_key",
    "build_revision",
    "canary_share",
    "effective_weights",
    "initial_state",
    "judge",
    "policy_from_spec",
    "state_from_document",
    "state_to_document",
    "step",
    "wake_at",
    "window_observations",
]
