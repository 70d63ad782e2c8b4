"""Manual actions: promote, promote-full, abort, retry, undo — each token handled once.

Matrix: promote moves past the current step and, at the last, promotes; promote-full promotes
at once; abort rolls back; retry restarts a rolled-back revision; undo serves a named earlier
revision as a rollout of it (to the stable one: Stable at once), and the route then serves it
although the spec says otherwise, until the spec changes; refusals (nothing in progress,
nothing rolled back, frozen by spec.paused, unknown, already rolling out, already stable, not
restorable because a backend is gone) consume their token; a token is never replayed — not on
the next step, not on a later rollout, not when an annotation goes back to an older value —
and the newest one of each kind is echoed; an empty token is no action.
"""

from __future__ import annotations

from core_rollout import Driver, act, policy, rev

from routeway.rollout import Action

R1, R2, R3 = rev("r1"), rev("r2"), rev("r3")
MANUAL = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 20}, {"pause": {}}, {"setWeight": 30}]


def manual() -> Driver:
    d = Driver(policy(steps=MANUAL, analysis=None))
    d.at(0, desired=R2)
    assert d.summary() == ("Paused", 1, 10, "r2")
    return d


def refusals(d: Driver) -> list[str]:
    return [e.message for e in d.events if e.reason == "ActionRefused"]


def test_promote_moves_one_step_and_a_token_is_handled_once() -> None:
    d = manual()
    d.at(10, actions=act("promote", "a"))
    assert d.summary() == ("Paused", 3, 20, "r2")
    d.at(20, actions=act("promote", "a"))  # the annotation is still there: not again
    assert d.summary() == ("Paused", 3, 20, "r2")
    d.at(30, actions=act("promote", "b"))
    assert d.summary() == ("Stable", 0, 0, None) and d.state.stable == R2
    assert d.state.handled_token("promote") == "b"
    assert [e.outcome for e in d.state.history[:1]] == ["promoted"]


def test_a_token_is_never_replayed_on_a_later_rollout() -> None:
    d = Driver(policy(steps=MANUAL, analysis=None))
    d.at(5, actions=act("promote", "early"))  # nothing in progress: refused, and consumed
    assert refusals(d) == ["promote (early) refused: no rollout in progress"]
    d.at(10, desired=R2, actions=act("promote", "early"))
    assert d.summary() == ("Paused", 1, 10, "r2")  # not promoted by the leftover annotation


def test_an_older_token_put_back_is_still_handled() -> None:
    d = manual()
    d.at(10, actions=act("promote", "a"))
    d.at(20, actions=act("promote", "b"))
    assert d.summary() == ("Stable", 0, 0, None)
    d.at(30, desired=R3)
    d.at(40, actions=act("promote", "a"))  # e.g. a GitOps tool restoring an older annotation
    assert d.summary() == ("Paused", 1, 10, "r3")


def test_an_empty_token_is_no_action() -> None:
    d = manual()
    d.at(10, actions=act("promote", ""))
    assert d.summary() == ("Paused", 1, 10, "r2") and d.state.handled == ()


def test_promote_full_promotes_at_once() -> None:
    d = Driver(policy())
    d.at(0, desired=R2)
    d.at(10, actions=act("promote-full", "now"))
    assert d.summary() == ("Stable", 0, 0, None) and d.state.stable == R2
    assert d.state.history[0].reason == "promoted fully by hand (now)"


def test_abort_rolls_back_and_retry_starts_again() -> None:
    d = Driver(policy())
    d.at(0, desired=R2)
    d.at(10, actions=act("abort", "x"))
    assert d.summary() == ("RolledBack", 0, 0, "r2") and d.state.message == "aborted by hand (x)"
    d.at(20, actions=act("abort", "y"))
    d.at(30, actions=(Action("retry", "1"), Action("promote", "p")))
    # retried (setWeight 10), promoted past the 5m pause, then setWeight 50 and pause {}
    assert d.summary() == ("Paused", 3, 50, "r2")
    d.at(40, actions=act("retry", "2"))
    assert refusals(d) == [
        "abort (y) refused: no rollout in progress",
        "retry (2) refused: no rolled-back revision to retry",
    ]


def test_promote_is_refused_while_frozen_by_spec_paused() -> None:
    d = manual()
    d.at(10, pol=policy(steps=MANUAL, analysis=None, paused=True), actions=act("promote-full", "f"))
    assert d.summary() == ("Paused", 1, 10, "r2")
    assert refusals(d) == ["promote-full (f) refused: the rollout is frozen by spec.paused"]


def history_of_three() -> Driver:
    d = Driver(policy(analysis=None))
    d.at(0, desired=R2, actions=act("promote-full", "1"))
    d.at(10, desired=R3, actions=act("promote-full", "2"))
    assert d.state.stable == R3 and [e.revision.hash for e in d.state.history] == ["r3", "r2", "r1"]
    return d


def test_undo_serves_an_earlier_revision_as_a_rollout_of_it() -> None:
    d = history_of_three()
    d.at(20, actions=act("undo", "u1", "r1"))
    assert d.summary() == ("Progressing", 1, 10, "r1") and d.state.stable == R3
    d.at(320)
    d.at(330, actions=act("promote", "p"))
    assert d.summary() == ("Stable", 0, 0, None) and d.state.stable == R1
    d.at(5000)  # the spec still says r3: no rollout starts by itself
    assert d.state.stable == R1 and d.state.desired == "r3"
    d.at(6000, desired=R2)  # until the spec changes
    assert d.summary() == ("Progressing", 1, 10, "r2") and d.state.stable == R1


def test_a_spec_that_catches_up_with_the_undo_continues_its_rollout() -> None:
    d = history_of_three()
    d.at(20, actions=act("undo", "u1", "r1"))
    seen = len(d.events)
    d.at(100, desired=R1)  # someone reverts Git to what the undo serves
    assert d.summary() == ("Progressing", 1, 10, "r1") and d.state.started_at == 20
    assert d.events[seen:] == []  # no restart, nothing superseded
    d.at(320)
    assert d.summary() == ("Paused", 3, 50, "r1")


def test_undo_to_the_stable_revision_during_a_rollout_is_stable_at_once() -> None:
    d = history_of_three()
    d.at(20, desired=rev("r4"))
    d.at(30, actions=act("undo", "u", "r3"))
    assert d.summary() == ("Stable", 0, 0, None) and d.state.stable == R3
    entry = d.state.entry("r4")
    assert entry is not None and entry.outcome == "superseded"


def test_undo_refusals() -> None:
    d = history_of_three()
    d.at(20, actions=act("undo", "a", "r3"))
    d.at(30, actions=act("undo", "b", "nope"))
    d.at(40, actions=act("undo", "c", "r2"))
    d.at(50, actions=act("undo", "d", "r2"))
    assert d.summary() == ("Progressing", 1, 10, "r2")
    assert refusals(d) == [
        "undo (a) refused: revision r3 is already the stable one",
        "undo (b) refused: revision 'nope' is not in the route's history",
        "undo (d) refused: revision r2 is already being rolled out",
    ]


def test_undo_to_a_revision_whose_backend_is_gone_is_refused() -> None:
    d = Driver(policy(analysis=None), desired=rev("r1", "default/old"))
    d.at(0, desired=rev("r2", "default/new"), actions=act("promote-full", "1"))
    d.backends = frozenset({"default/new"})
    d.at(10, actions=act("undo", "u1", "r1"))
    assert d.summary() == ("Stable", 0, 0, None)
    assert refusals(d) == [
        "undo (u1) refused: revision r1 is not restorable: ModelBackend default/old no longer exists"
    ]
    entry = d.state.entry("r1")
    assert entry is not None and not entry.restorable
    d.backends = None  # unknown now: the last known answer stands
    d.at(15, actions=act("undo", "u2", "r1"))
    assert (
        refusals(d)[-1]
        == "undo (u2) refused: revision r1 is not restorable: a backend it uses no longer exists"
    )
    d.backends = frozenset({"default/new", "default/old"})  # it came back
    d.at(20, actions=act("undo", "u3", "r1"))
    assert d.summary() == ("Progressing", 1, 10, "r1")
    entry = d.state.entry("r1")
    assert entry is not None and entry.restorable


def test_retry_of_a_revision_whose_backend_is_gone_is_refused() -> None:
    d = Driver(policy(analysis=None))
    d.at(0, desired=rev("r2", "default/new"), actions=act("abort", "x"))
    d.backends = frozenset({"default/a"})
    d.at(10, actions=act("retry", "r"))
    assert d.summary() == ("RolledBack", 0, 0, "r2")
    assert refusals(d) == [
        "retry (r) refused: revision r2 is not restorable: ModelBackend default/new no longer exists"
    ]
