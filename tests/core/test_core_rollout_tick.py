"""The adapters' shared loop body (routeway.rollout.tick) and what a rollout serves
(routeway.rollout.serving), on revisions from real translation and a fake clock."""

from __future__ import annotations

from core_rollout import analysis_spec, chat, mb, obs, policy, revision_of, translated

from routeway.proxyconfig import parse_proxy_config
from routeway.render import render_all
from routeway.rollout.observations import Report, Sample
from routeway.rollout.serving import ServedRoute, desired_revisions, serve_rollouts
from routeway.rollout.tick import keep_samples, needed_revisions, tick_route
from routeway.translate import Inventory, translate

from core_factories import gateway  # isort: skip

V1 = [mb("a"), mb("b"), chat([("a", 100)])]
V2 = [mb("a"), mb("b"), chat([("b", 100)])]
CHECKED = policy(
    steps=[{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"pause": {}}],
    analysis=analysis_spec(interval="10s", window="60s", minRequests=100, failureLimit=1),
)


def sample(
    at: float, stable: str, canary: str, stable_obs: object, canary_obs: object, started: float = 0.0
) -> Sample:
    arms = {("default/chat", stable): stable_obs, ("default/chat", canary): canary_obs}
    return Sample(at, Report("pod-1", started, arms))  # type: ignore[arg-type]


def test_first_tick_serves_the_spec_as_stable() -> None:
    v1 = revision_of(V1)
    tick = tick_route(None, v1, CHECKED, 0.0, {})
    assert tick.state.phase == "Stable" and tick.served == ServedRoute(v1, None, 0.0)
    assert [(w.backend, w.arm, w.weight) for w in tick.weights] == [("default/a", "stable", 100.0)]


def test_a_new_spec_serves_both_arms_blended() -> None:
    v1, v2 = revision_of(V1), revision_of(V2)
    first = tick_route(None, v1, CHECKED, 0.0, {})
    tick = tick_route(first.state, v2, CHECKED, 1.0, {v1.hash: v1})
    assert tick.state.phase == "Progressing" and tick.state.canary_weight == 10
    assert tick.served == ServedRoute(v1, v2, 10.0)
    assert {(w.backend, w.arm): w.weight for w in tick.weights} == {
        ("default/a", "stable"): 90.0,
        ("default/b", "canary"): 10.0,
    }


def test_a_failing_canary_is_rolled_back_on_the_samples_and_no_longer_served() -> None:
    v1, v2 = revision_of(V1), revision_of(V2)
    snapshots = {v1.hash: v1}
    tick = tick_route(None, v1, CHECKED, 0.0, {})
    tick = tick_route(tick.state, v2, CHECKED, 0.0, snapshots)
    snapshots[v2.hash] = v2
    samples = [sample(0.0, v1.hash, v2.hash, obs(0), obs(0))]
    t = 0.0
    for n in range(1, 4):
        t = 10.0 * n
        samples.append(sample(t, v1.hash, v2.hash, obs(1000 * n), obs(1000 * n, errors=300 * n)))
        tick = tick_route(tick.state, v2, CHECKED, t, snapshots, samples)
        if tick.state.phase == "RolledBack":
            break
    assert tick.state.phase == "RolledBack" and t == 20.0, "failureLimit 1: the second failed check"
    assert tick.served == ServedRoute(v1, None, 0.0)
    assert tick.decision.check is not None and tick.decision.check.canary_requests == 2000, (
        "the window: all since the start"
    )


def test_a_due_check_without_samples_is_inconclusive_and_with_an_idle_canary_too() -> None:
    v1, v2 = revision_of(V1), revision_of(V2)
    tick = tick_route(tick_route(None, v1, CHECKED, 0.0, {}).state, v2, CHECKED, 0.0, {v1.hash: v1})
    unread = tick_route(tick.state, v2, CHECKED, 10.0, {v1.hash: v1}, None)
    assert unread.decision.check is not None and unread.decision.check.verdict == "inconclusive"
    idle = [sample(0.0, v1.hash, v2.hash, obs(0), obs(0)), sample(10.0, v1.hash, v2.hash, obs(500), obs(5))]
    thin = tick_route(tick.state, v2, CHECKED, 10.0, {v1.hash: v1}, idle)
    assert thin.decision.check is not None and thin.decision.check.verdict == "inconclusive"
    assert thin.decision.check.canary_requests == 5


def test_a_lost_snapshot_is_reported_and_never_guessed() -> None:
    v1, v2 = revision_of(V1), revision_of(V2)
    stable = tick_route(None, v1, CHECKED, 0.0, {}).state
    tick = tick_route(stable, v2, CHECKED, 1.0, {})  # v1's snapshot is gone
    assert tick.missing == (v1.hash,)
    assert tick.served.stable == v2 and tick.served.canary == v2


def test_needed_revisions_and_kept_samples() -> None:
    v1, v2 = revision_of(V1), revision_of(V2)
    tick = tick_route(tick_route(None, v1, CHECKED, 0.0, {}).state, v2, CHECKED, 1.0, {v1.hash: v1})
    assert needed_revisions(tick.state) == {v1.hash, v2.hash}
    s = [sample(float(t), v1.hash, v2.hash, obs(t), obs(t)) for t in range(0, 50, 10)]
    kept = keep_samples(s, 25.0)
    assert [x.at for x in kept] == [20.0, 30.0, 40.0], "the newest before `since` stays as a baseline"


def test_served_config_pins_the_stable_arms_old_backend_spec() -> None:
    """A ModelBackend edit rolled out: both arms name backend a; the stable arm keeps the old
    url as a pinned spec, the canary uses the config's current one."""
    old = [mb("a", url="http://old:8000/v1"), chat([("a", 100)])]
    new = [mb("a", url="http://new:8000/v1"), chat([("a", 100)])]
    v1, v2 = revision_of(old), revision_of(new)
    assert v1.hash != v2.hash
    config = render_all(translate(Inventory.from_objects([gateway(), *new])))[("default", "default")]
    assert desired_revisions(config)["default/chat"] == v2
    served = serve_rollouts(config, {"default/chat": ServedRoute(v1, v2, 25.0)})
    route = served.routes[0]
    assert route.revision == v1.hash and [b.url for b in route.pinned_backends] == ["http://old:8000/v1"]
    assert route.canary is not None and route.canary.revision == v2.hash and route.canary.weight == 25.0
    assert route.canary.pinned_backends == ()
    assert served.revision != config.revision and served.revision == served.with_revision().revision
    assert parse_proxy_config(served.to_json()) == served


def test_served_config_marks_routes_without_a_rollout_with_their_revision() -> None:
    route_config, _ = translated(V1)
    config = render_all(translate(Inventory.from_objects([gateway(), *V1])))[("default", "default")]
    served = serve_rollouts(config, {})
    assert served.routes[0].revision == revision_of(V1).hash and served.routes[0].canary is None
    assert served.routes[0].model_copy(update={"revision": None}) == route_config


def test_an_adapter_restart_mid_rollout_does_not_judge_an_empty_window() -> None:
    """The operator keeps its samples in memory: restarted (or a new leader) while a healthy
    canary is being analysed, its first read is a single sample, taken when the next check is
    already due. That check must not be judged on a window of zero seconds (0 requests:
    inconclusive, so Paused, or with onInconclusive: Fail a rollback of a healthy canary) —
    the pods served thousands of canary requests in the window."""
    from routeway.rollout.document import state_from_document, state_to_document

    failing_on_inconclusive = policy(
        steps=[{"setWeight": 10}, {"pause": {"duration": "1h"}}],
        analysis=analysis_spec(
            interval="10s", window="60s", minRequests=100, failureLimit=0, onInconclusive="Fail"
        ),
    )
    v1, v2 = revision_of(V1), revision_of(V2)
    snapshots = {v1.hash: v1, v2.hash: v2}
    tick = tick_route(None, v1, failing_on_inconclusive, 0.0, {})
    tick = tick_route(tick.state, v2, failing_on_inconclusive, 0.0, snapshots)
    pod_start = -3600.0  # the pods were running before the rollout
    samples = [sample(0.0, v1.hash, v2.hash, obs(0), obs(0), pod_start)]
    for n in (1, 2, 3):  # healthy checks at 10, 20, 30
        samples.append(sample(10.0 * n, v1.hash, v2.hash, obs(900 * n), obs(100 * n), pod_start))
        tick = tick_route(tick.state, v2, failing_on_inconclusive, 10.0 * n, snapshots, samples)
        assert tick.decision.check is not None and tick.decision.check.verdict == "pass"
    # restart: the state comes back from status.rollout, the samples are gone; the pods have
    # kept serving (cumulative counts grew) and the check due at 40 runs on the first read
    restored = state_from_document(state_to_document(tick.state, tick.weights))
    first_read = [sample(41.0, v1.hash, v2.hash, obs(3690), obs(410), pod_start)]
    after = tick_route(restored, v2, failing_on_inconclusive, 41.0, snapshots, first_read)
    assert after.state.phase == "Progressing", (after.state.phase, after.state.message)
