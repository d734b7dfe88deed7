"""The live scheduler: one thread that feeds the `Evaluator` with commits and runs its timer.

The store's writer thread calls `Scheduler.on_commit` after every commit; that only appends the
event to a bounded queue (no work in the writer, never a wait). The thread first restores
detection state from the store (so the server serves while it does), then folds each batch in,
evaluates the services it touched at once (a breach is seen milliseconds after its commit) and
every `evaluation_interval_seconds` runs the timer (`Evaluator.tick`). When the queue holds
more than `max_queue_logs` logs, new batches are left out of detection, counted in `dropped`,
and an `evaluator` meta-alert fires once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loglens.alerting.evaluator import Evaluator
from loglens.config import Settings
from loglens.detect.documents import PatternFinding
from loglens.store import CommitEvent, Store

log = logging.getLogger("loglens.evaluator")

BEHIND_META = "evaluator"
MAX_ITEMS_PER_PASS = 1000


@dataclass(frozen=True, slots=True)
class _Reconfigure:
    """A config reload handed to the thread, applied between two evaluations."""

    settings: Settings
    done: threading.Event


_Item = CommitEvent | PatternFinding | _Reconfigure


class Scheduler:
    """Runs one `Evaluator` on its own thread behind a bounded queue."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        restore_from: Store | None = None,
        max_queue_logs: int = 500_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.evaluator = evaluator
        self.restore_from = restore_from
        self.max_queue_logs = max_queue_logs
        self._monotonic = monotonic
        self._items: deque[_Item] = deque()
        self._queued_logs = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._behind_raised = False
        self.dropped = 0  # logs left out of detection because the queue was full
        self.restored = threading.Event()

    # ---- feeding (any thread, never blocks) ------------------------------------------------------
    def on_commit(self, event: CommitEvent) -> None:
        """Store listener (writer thread): queue the event, or count it when the queue is full."""
        n = event.logs.num_rows
        with self._cond:
            if self._queued_logs + n > self.max_queue_logs:
                self.dropped += n
                raise_meta = not self._behind_raised
                self._behind_raised = True
            else:
                self._items.append(event)
                self._queued_logs += n
                self._cond.notify()
                return
        if raise_meta:
            log.error("evaluator queue full: batches left out of alerting", extra={"max": self.max_queue_logs})
            self.evaluator.engine.raise_meta(
                BEHIND_META,
                f"alert evaluation is behind: more than {self.max_queue_logs} logs queued, newer batches are "
                "left out of alerting",
                "critical",
            )

    def on_pattern(self, finding: PatternFinding) -> None:
        """Pattern worker callback (its thread): hand the finding over."""
        with self._cond:
            self._items.append(finding)
            self._cond.notify()

    def reconfigure(self, settings: Settings, timeout: float = 5.0) -> bool:
        """Switch to new rules between two evaluations and wait until applied (config reload)."""
        if self._thread is None:
            self.evaluator.apply_settings(settings)
            return True
        done = threading.Event()
        with self._cond:
            self._items.append(_Reconfigure(settings, done))
            self._cond.notify()
        return done.wait(timeout)

    @property
    def queued_logs(self) -> int:
        """Logs waiting for the evaluator."""
        return self._queued_logs

    # ---- thread ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (and the pattern worker); restoring happens on the thread."""
        if self.evaluator.patterns is not None:
            self.evaluator.patterns.start()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="loglens-evaluator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (queued work is dropped after `timeout`) and the pattern worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.evaluator.patterns is not None:
            self.evaluator.patterns.stop()

    def _run(self) -> None:
        if self.restore_from is not None:
            try:
                restore(self.evaluator, self.restore_from)
            except Exception:  # a failed restore costs history, never the server
                log.exception("cannot restore detection state")
        self.restored.set()
        interval = self.evaluator.alerts.evaluation_interval_seconds
        next_tick = self._monotonic() + interval
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: bool(self._items) or self._stopping, max(0.0, next_tick - self._monotonic())
                )
                if self._stopping:
                    return
                items = [self._items.popleft() for _ in range(min(len(self._items), MAX_ITEMS_PER_PASS))]
                self._queued_logs -= sum(i.logs.num_rows for i in items if isinstance(i, CommitEvent))
                clear_behind = self._behind_raised and self._queued_logs < self.max_queue_logs // 2
                if clear_behind:
                    self._behind_raised = False
            try:
                if clear_behind:
                    self.evaluator.engine.resolve_meta(BEHIND_META)
                self.handle(items)
                if self._monotonic() >= next_tick:
                    interval = self.evaluator.alerts.evaluation_interval_seconds
                    next_tick = self._monotonic() + interval
                    self.evaluator.tick()
            except Exception:  # evaluation must survive any single bad batch
                log.exception("alert evaluation failed")

    def handle(self, items: list[_Item]) -> None:
        """Apply reloads, fold every batch in and evaluate the touched services once."""
        ev = self.evaluator
        for i in items:
            if isinstance(i, _Reconfigure):
                ev.apply_settings(i.settings)
                i.done.set()
        touched: set[str] = set()
        for i in items:
            if isinstance(i, CommitEvent):
                touched.update(ev.fold(i.logs, i.partials))
        if touched:
            ev.evaluate(sorted(touched))
        for i in items:
            if isinstance(i, PatternFinding):
                ev.handle_pattern(i)


def restore(evaluator: Evaluator, store: Store) -> None:
    """Rebuild windows, last-seen times and baselines from the store after a (re)start.

    Bounded: at most `alerts.max_series` services, the most recently seen first, and none idle
    for longer than `alerts.series_idle_seconds`, so a store holding 100k names restarts fast.
    """
    alerts = evaluator.alerts
    now = evaluator.clock()
    evaluator.adopt_restored()
    firing_absence = {a.service for a in evaluator.engine.active() if a.rule == "absence"}
    idle_floor = now - alerts.series_idle_seconds if alerts.series_idle_seconds > 0 else 0.0
    rows = store.query(
        "SELECT service, epoch_us(last_seen) FROM services WHERE last_seen >= make_timestamp(?) "
        "ORDER BY last_seen DESC LIMIT ?",
        [int(idle_floor * 1e6), alerts.max_series],
    )
    for svc, last_seen_us in rows:
        # a restart is not an outage of every service: judge silence from our own start,
        # except for services already known to be silent
        seen = last_seen_us / 1e6
        evaluator.windows.touch(svc, seen if svc in firing_absence else max(seen, now))
    # the same services only, chosen in SQL: a store with 100k names restores 10k of them
    tracked = (
        "service IN (SELECT service FROM services WHERE last_seen >= make_timestamp(?) ORDER BY last_seen DESC LIMIT ?)"
    )
    scope = [int(idle_floor * 1e6), alerts.max_series]
    since = int((now - evaluator.windows.horizon_s) * 1e6)
    logs = store.query_arrow(
        "SELECT service, ts, received_at, level, response_time_ms FROM logs "
        f"WHERE received_at >= make_timestamp(?) AND {tracked}",
        [since, *scope],
    )
    if logs.num_rows:
        evaluator.windows.add(logs)
    since_min = int((now - 3600) * 1e6)
    for svc, minute_us, count, errors in store.query(
        "SELECT service, epoch_us(minute), count, error + fatal FROM metrics_minute "
        f"WHERE minute >= make_timestamp(?) AND {tracked} ORDER BY minute",
        [since_min, *scope],
    ):
        evaluator.detector.add_minute(svc, minute_us // 1_000_000, count, errors)
    for svc, minute_us, buckets, counts in store.query(
        "SELECT service, epoch_us(minute), list(bucket), list(count) FROM latency_sketch "
        f"WHERE minute >= make_timestamp(?) AND {tracked} GROUP BY service, minute",
        [since_min, *scope],
    ):
        evaluator.detector.add_minute(svc, minute_us // 1_000_000, 0, 0, dict(zip(buckets, counts, strict=True)))
    evaluator.detector.close_minutes(now)
