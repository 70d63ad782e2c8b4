"""The fast-path seams: which path a process takes, and the one line that says so.

Matrix: ROUTEWAY_FAST_PATHS unset / on / off / unknown; the metrics seam with its proof
passing, failing, raising; the upstream seam on a compared release, another release, a moved
private name, a changed signature; each seam decides once and logs once; this test process itself follows the switch (so the second,
switched-off run of the proxy tests really runs the public paths). What each path does is
tested beside its code: test_proxy_metric_values.py (the proof, identical values),
test_proxy_upstream_client.py (identical upstream requests).
"""

from __future__ import annotations

import logging

import pytest
from routeway_proxy.fastpaths import FAST_PATHS_VARIABLE, Choice, Seam, fast_paths_refusal
from routeway_proxy.metric_values import FAST_VALUES, PUBLIC_VALUES, FastValues
from routeway_proxy.metrics import METRIC_VALUES
from routeway_proxy.metrics_proof import choose_metric_values, prove_fast_values
from routeway_proxy.upstream_client import (
    UPSTREAM_PATH,
    LeanPath,
    choose_upstream_path,
    import_private_names,
    load_lean_path,
)

OFF = {FAST_PATHS_VARIABLE: "off"}


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        (None, None),
        ("", None),
        ("on", None),
        (" ON ", None),
        ("off", "ROUTEWAY_FAST_PATHS=off"),
        ("Off", "ROUTEWAY_FAST_PATHS=off"),
        ("fast", "ROUTEWAY_FAST_PATHS='fast' is neither 'on' nor 'off'"),
    ],
)
def test_the_switch(setting: str | None, refusal: str | None) -> None:
    environ = {} if setting is None else {FAST_PATHS_VARIABLE: setting}
    assert fast_paths_refusal(environ) == refusal


def test_this_process_follows_the_switch() -> None:
    """The proxy tests run twice in scripts/test, the second time with ROUTEWAY_FAST_PATHS=off:
    this holds that the variable reached both seams (and, on the first run, that the installed
    libraries pass both start-up checks)."""
    off = fast_paths_refusal() is not None
    assert (METRIC_VALUES.get() is PUBLIC_VALUES) == off
    assert (METRIC_VALUES.get() is FAST_VALUES) == (not off)
    assert (UPSTREAM_PATH.get() is None) == off


def counting_seam(choice: Choice[str], calls: list[int]) -> Seam[str]:
    def choose() -> Choice[str]:
        calls.append(1)
        return choice

    return Seam(choose)


def test_a_seam_chooses_once_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    calls: list[int] = []
    seam = counting_seam(Choice("fast", "thing: the fast path"), calls)
    assert seam.chosen is None
    assert [seam.get() for _ in range(3)] == ["fast"] * 3
    assert calls == [1]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "thing: the fast path")]


def test_a_failed_check_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    seam = counting_seam(Choice("public", "thing: the public API; broken", failed=True), [])
    seam.get()
    seam.get()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "thing: the public API; broken")
    ]


class DetachedValues(FastValues):
    """A broken fast path: its values are never put into the children, so writes are lost."""

    def adopt(self, holder: object, attribute: str = "_value") -> object:
        return self.make(getattr(holder, attribute))


def test_metrics_take_the_public_api_when_the_proof_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routeway.proxy")
    seam = Seam(
        lambda: choose_metric_values({}, lambda: prove_fast_values(DetachedValues(), multiprocess=False))
    )
    assert seam.get() is PUBLIC_VALUES
    assert seam.get() is PUBLIC_VALUES
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("metrics: prometheus-client's public API; direct value updates failed")
    assert "samples differ" in message


def test_metrics_take_the_public_api_when_the_proof_raises() -> None:
    def proof() -> str | None:
        raise AttributeError("'Histogram' object has no attribute '_buckets'")

    choice = choose_metric_values({}, proof)
    assert choice.path is PUBLIC_VALUES and choice.failed
    assert "AttributeError: 'Histogram' object has no attribute '_buckets'" in choice.line


def test_metrics_take_direct_updates_when_the_proof_passes() -> None:
    choice = choose_metric_values({}, lambda: None)
    assert choice.path is FAST_VALUES and not choice.failed
    assert choice.line.startswith("metrics: direct value updates (single-process; start-up proof passed")


def test_metrics_switched_off_take_the_public_api_without_a_proof() -> None:
    def proof() -> str | None:
        raise AssertionError("no proof runs when the fast paths are off")

    choice = choose_metric_values(OFF, proof)
    assert choice == Choice(
        PUBLIC_VALUES, "metrics: prometheus-client's public API (ROUTEWAY_FAST_PATHS=off)"
    )


def test_upstream_posts_take_the_lean_path_on_a_compared_release() -> None:
    choice = choose_upstream_path({})
    assert isinstance(choice.path, LeanPath) and not choice.failed
    assert choice.line.startswith("upstream POSTs: the lean path (aiohttp 3.14.")


@pytest.mark.parametrize("release", ["3.15.0", "3.13.2", "4.0.0"])
def test_upstream_posts_on_a_release_not_compared_take_the_session(release: str) -> None:
    choice = choose_upstream_path({}, lambda: load_lean_path(release))
    assert choice.path is None and choice.failed
    assert choice.line == (
        "upstream POSTs: ClientSession.request(); the lean path is not used: "
        f"aiohttp {release} is not a release the lean path was compared with (3.14)"
    )


def test_upstream_posts_take_the_session_when_a_private_name_moved() -> None:
    def moved() -> tuple[object, object]:
        raise ImportError("cannot import name 'TimerNoop' from 'aiohttp.helpers'")

    lean = load_lean_path(private_names=moved)
    assert isinstance(lean, str) and "ImportError: cannot import name 'TimerNoop'" in lean
    choice = choose_upstream_path({}, lambda: load_lean_path(private_names=moved))
    assert choice.path is None and choice.failed and "TimerNoop" in choice.line


def test_upstream_posts_take_the_session_when_a_signature_changed() -> None:
    class Handler:
        def set_response_params(self, *, timer: object = None, read_timeout: object = None) -> None: ...

    _, timer = import_private_names()
    lean = load_lean_path(private_names=lambda: (Handler, timer))
    assert lean == "ResponseHandler.set_response_params takes ('timer', 'read_timeout')"


def test_upstream_posts_take_the_session_when_the_loader_raises() -> None:
    def loader() -> LeanPath | str:
        raise RuntimeError("boom")

    choice = choose_upstream_path({}, loader)
    assert choice.path is None and choice.failed and "RuntimeError: boom" in choice.line


def test_upstream_posts_switched_off_take_the_session_without_loading() -> None:
    def loader() -> LeanPath | str:
        raise AssertionError("nothing private is imported when the fast paths are off")

    choice = choose_upstream_path(OFF, loader)
    assert choice == Choice(None, "upstream POSTs: ClientSession.request() (ROUTEWAY_FAST_PATHS=off)")
