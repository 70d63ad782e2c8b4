"""Where config reaches a proxy process: the `ConfigSource` seam and the apply loop.

`ConfigApplier` is the one place that applies a source's updates to the runtime and logs a
config load or rejection — once for the whole process group (workers log those at debug
level); the runtime it feeds logs nothing about them. A credential that cannot travel (not
Unicode text) is a rejection decided here, before anything is applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Protocol

from routeway.configupdate import ConfigLoaded, ConfigRejected, ConfigUpdate
from routeway.proxyconfig import ProxyConfig

if TYPE_CHECKING:
    from routeway_proxy.runtime import ProxyRuntime

log = logging.getLogger("routeway.proxy")


class ConfigSource(Protocol):
    """Where a process's config comes from.

    Only one process of a group opens `watch()` (the supervisor relays its updates to the
    workers as `routeway.configupdate` messages). `watch()` yields the current state first,
    then one update per change, and never raises for bad input — bad input is a
    `ConfigRejected`.

    Optionally a source defines `attach(self, host: SourceHost) -> None` (not part of this
    Protocol, so existing sources need nothing): the process that reads it calls it once,
    before `watch()` is opened and before the admin port starts, with the group's
    `source_host.SourceHost` (observations per route revision, admin routes of its own).
    """

    def describe(self) -> str: ...

    def watch(self) -> AsyncIterator[ConfigUpdate]: ...


class ConfigApplier:
    """Feeds a source's updates to the runtime: the one place config reaches a process.

    Repeated identical updates are dropped (a touched file, a source re-listing), so each
    load or rejection is applied and logged once, here and nowhere else (the runtime only
    records them). `announce=False` keeps workers quiet at info level: the supervisor logs
    for the group.
    """

    def __init__(self, runtime: ProxyRuntime, *, announce: bool) -> None:
        self._runtime = runtime
        self._announce = announce
        self._last_loaded: tuple[ProxyConfig, bytes, tuple[str, ...]] | None = None
        self._last_rejected: ConfigRejected | None = None
        self.loaded_once = False
        self.first_update = asyncio.Event()

    async def run(self, source: ConfigSource) -> None:
        """Consume the source for ever; a source that crashes is logged and reopened."""
        while True:
            try:
                async for update in source.watch():
                    self.handle(update)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("config source %s failed; reopening in 1s", source.describe())
                self.first_update.set()
            await asyncio.sleep(1.0)

    def handle(self, update: ConfigUpdate) -> None:
        try:
            if isinstance(update, ConfigLoaded):
                self._apply(update)
            else:
                self._reject(update)
        finally:
            self.first_update.set()

    def _apply(self, update: ConfigLoaded) -> None:
        unsendable = sorted(ref for ref, value in update.credentials.items() if not is_text(value))
        if unsendable:  # a lone surrogate (YAML's "\udce9"): no header, digest or JSON carries it
            errors = tuple(f"{update.source}: credential {ref}: not valid Unicode text" for ref in unsendable)
            self._reject(ConfigRejected(update.source, errors))
            return
        key = (update.config, digest_credentials(update.credentials), update.warnings)
        if key == self._last_loaded and self._last_rejected is None:
            return
        try:
            self._runtime.apply(update.config, update.credentials, update.warnings)
        except Exception as exc:  # the runtime found it unservable: same as a rejection
            log.debug("runtime refused config from %s", update.source, exc_info=True)
            self._reject(ConfigRejected(update.source, (f"{update.source}: {exc}",)))
            return
        self._last_loaded, self._last_rejected = key, None
        self.loaded_once = True
        config = update.config
        missing = sorted(
            {b.credential_ref for b in config.backends if b.credential_ref} - set(update.credentials)
        )
        self._log(
            logging.INFO,
            "config revision %s loaded from %s: %d routes, %d backends",
            config.revision or "-",
            update.source,
            len(config.routes),
            len(config.backends),
        )
        if missing:
            self._log(logging.WARNING, "no credential found for %s", ", ".join(missing))
        if update.warnings:
            lines = "".join(f"\n  - {w}" for w in update.warnings)
            self._log(
                logging.WARNING,
                "served with problems in %s (affected objects serve their last good version, "
                "or are left out):%s",
                update.source,
                lines,
            )

    def _reject(self, update: ConfigRejected) -> None:
        if update == self._last_rejected:
            return
        self._last_rejected = update
        self._runtime.reject(update.source, update.errors)
        current = self._runtime.config
        keeps = f"still serving revision {current.revision or '-'}" if current else "nothing to serve yet"
        lines = "".join(f"\n  - {e}" for e in update.errors)
        self._log(logging.WARNING, "config from %s rejected (%s):%s", update.source, keeps, lines)

    def _log(self, level: int, msg: str, *args: object) -> None:
        log.log(level if self._announce else logging.DEBUG, msg, *args)


def is_text(value: str) -> bool:
    """Encodable as UTF-8: what a credential must be to reach a header, a digest or a worker."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def digest_credentials(credentials: Mapping[str, str]) -> bytes:
    """Compare credential sets without keeping a second copy of the values around."""
    h = hashlib.blake2b(digest_size=16)
    for ref in sorted(credentials):
        h.update(ref.encode() + b"\0" + credentials[ref].encode() + b"\0")
    return h.digest()
