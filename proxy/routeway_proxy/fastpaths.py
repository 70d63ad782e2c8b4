"""Seams between the proxy's fast paths and the public library APIs they stand in for.

Two hot spots of the request path are faster through a library's private internals than
through its public API: upstream POSTs (`upstream_client.py`, aiohttp's lower client layers)
and metric updates (`metric_values.py`, prometheus-client's value objects and mmap layout).
Private internals can change in any release, so each fast path sits behind a `Seam`: once
per process, on first use, it checks that the fast path still behaves as the public API
does on the installed library (each seam's own start-up proof), and otherwise — or when
`ROUTEWAY_FAST_PATHS=off` — the public API is used. Either way one log line says which path
is active and why; the public API always works, only its CPU cost is higher.

`ROUTEWAY_FAST_PATHS`: unset or `on` lets every fast path that proves itself be used; `off`
forces the public API everywhere (`scripts/test` runs the proxy tests a second time with it,
so that path cannot rot). Any other value also means the public API, and the log line says why.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Generic, NamedTuple, TypeVar

__all__ = ["FAST_PATHS_VARIABLE", "Choice", "Seam", "fast_paths_refusal"]

log = logging.getLogger("routeway.proxy")

FAST_PATHS_VARIABLE = "ROUTEWAY_FAST_PATHS"

T = TypeVar("T")


def fast_paths_refusal(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why fast paths must not be used in this process, or None when they may be."""
    setting = environ.get(FAST_PATHS_VARIABLE, "").strip()
    if setting.lower() in ("", "on"):
        return None
    if setting.lower() == "off":
        return f"{FAST_PATHS_VARIABLE}=off"
    return f"{FAST_PATHS_VARIABLE}={setting!r} is neither 'on' nor 'off'"


class Choice(NamedTuple, Generic[T]):
    """What a seam's chooser decided: the path to use and the one line that says so."""

    path: T
    line: str
    failed: bool = False  # a fast path failed its proof: the line is a warning, not news


class Seam(Generic[T]):
    """The path one fast-path seam uses in this process: chosen once, on first use, logged once.

    `choose` runs the seam's checks; it must not raise (a chooser catches what its proof
    raises and chooses the public path). Choosing on first use rather than at import keeps a
    moved private name from stopping the process: it only decides the path.
    """

    def __init__(self, choose: Callable[[], Choice[T]], logger: logging.Logger = log) -> None:
        self._choose = choose
        self._log = logger
        self._lock = threading.Lock()
        self._choice: Choice[T] | None = None

    def get(self) -> T:
        choice = self._choice
        if choice is None:
            with self._lock:
                choice = self._choice
                if choice is None:
                    choice = self._choice = self._choose()
                    level = logging.WARNING if choice.failed else logging.INFO
                    self._log.log(level, "%s", choice.line)
        return choice.path

    @property
    def chosen(self) -> Choice[T] | None:
        """The choice made, or None before the first `get()`."""
        return self._choice
