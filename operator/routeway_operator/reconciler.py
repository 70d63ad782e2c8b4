"""The dirty set: watch events mark keys, one worker per key rebuilds it after a short quiet time.

Why not reconcile inside each kopf handler: a burst (kubectl apply of 50 routes, a Secret
rotation touching 30 backends) would render the same gateway 50 times. Here every event
only marks the affected keys; a key is reconciled once its debounce delay has passed since
it was first marked, so the burst coalesces into one render. A key is never reconciled twice
at once; a mark that arrives while it runs schedules exactly one more run afterwards.

Errors follow kopf's vocabulary: `kopf.TemporaryError` re-marks the key after its delay
(doubling per consecutive failure, capped), `kopf.PermanentError` is not retried until the
next change (the reconcile reports it on the object before raising). Anything else is a bug
and is retried with the same backoff, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

import kopf

from routeway_operator.metrics import OperatorMetrics

log = logging.getLogger("routeway.operator.reconciler")

MAX_BACKOFF = 60.0


class Reconciler:
    def __init__(
        self,
        reconcile: Callable[[Hashable], Awaitable[None]],
        *,
        debounce: float,
        workers: int,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else OperatorMetrics()
        self._reconcile = reconcile
        self._debounce = debounce
        self._workers = max(1, workers)
        self._due: dict[Hashable, float] = {}
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._failures: dict[Hashable, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.runs = 0  # completed reconciles, for tests and the benchmark
        self.runs_by_key: collections.Counter[Hashable] = collections.Counter()

    def mark(self, key: Hashable, delay: float | None = None) -> None:
        """Schedule `key`; an earlier pending schedule wins, so bursts do not postpone it."""
        if key in self._running:
            self._again.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + (self._debounce if delay is None else delay)
        self._due[key] = min(due, self._due.get(key, due))
        self._idle.clear()
        self._wake.set()

    def wake(self, key: Hashable, delay: float) -> None:
        """Mark `key` in `delay` seconds (a rollout's next check or step), unless an earlier
        wake-up is set. A timer, not a mark: until it fires the key is not pending, so the
        queue is idle in between (a pause of an hour is not an hour of pending work)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, delay)
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled():
            if timer.when() <= due:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.mark(key, 0.0)

    @property
    def pending(self) -> int:
        return len(self._due) + len(self._running)

    async def wait_idle(self) -> None:
        """Until nothing is scheduled or running (tests; the benchmark)."""
        await self._idle.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                now = loop.time()
                for key in sorted((k for k, t in self._due.items() if t <= now), key=lambda k: self._due[k]):
                    if len(self._running) >= self._workers:
                        break
                    del self._due[key]
                    self._running.add(key)
                    task = asyncio.create_task(self._run_one(key), name=f"reconcile {key}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                self._update_idle()
                waiting = [t for k, t in self._due.items() if k not in self._running]
                timeout = (
                    max(0.0, min(waiting) - now) if waiting and len(self._running) < self._workers else None
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _update_idle(self) -> None:
        self._metrics.pending.set(len(self._due) + len(self._running))
        if not self._due and not self._running:
            self._idle.set()
        else:
            self._idle.clear()

    async def _run_one(self, key: Hashable) -> None:
        retry: float | None = None
        kind = str(getattr(key, "kind", type(key).__name__))
        result = "ok"
        started = asyncio.get_running_loop().time()
        try:
            await self._reconcile(key)
            self._failures.pop(key, None)
        except asyncio.CancelledError:
            raise
        except kopf.PermanentError as exc:
            result = "failed"
            self._failures.pop(key, None)
            log.warning("reconcile of %s failed permanently: %s", key, exc)
        except kopf.TemporaryError as exc:
            result = "retry"
            retry = self._backoff(key, exc.delay)
            log.info("reconcile of %s will be retried in %.1fs: %s", key, retry, exc)
        except Exception:
            result = "crashed"
            retry = self._backoff(key, None)
            log.exception("reconcile of %s crashed; retrying in %.1fs", key, retry)
        finally:
            self._metrics.reconciles.labels(kind, result).inc()
            self._metrics.reconcile_seconds.labels(kind).observe(asyncio.get_running_loop().time() - started)
            self.runs += 1
            self.runs_by_key[key] += 1
            self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.mark(key)
            if retry is not None:
                self.mark(key, retry)
            self._update_idle()
            self._wake.set()

    def _backoff(self, key: Hashable, base: float | None) -> float:
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        return float(min(MAX_BACKOFF, (base or 1.0) * 2 ** (count - 1)))
