"""Alerting as one app component, built from explicit typed dependencies.

`build_alerting(settings, store, sink=..., publish=...)` constructs the repository, the writer
thread, the engine, the evaluator, the pattern worker and the scheduler; `AlertingComponent`
starts and stops them in order. The composition root wires it (today `start_component` /
`stop_component` below, called by api/app.py); nothing here looks anything up at run time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread

from loglens.alerting.engine import AlertEngine
from loglens.alerting.evaluator import Evaluator, RuleStats, SeriesStats
from loglens.alerting.ports import NotificationSink, Publish
from loglens.alerting.scheduler import Scheduler
from loglens.config import AlertsConfig, Settings
from loglens.detect.pattern_worker import PatternWorker
from loglens.detect.validator import AnomalyValidator
from loglens.store import Store
from loglens.store.alerts import AlertRepository, AlertWriter

if TYPE_CHECKING:
    from loglens.api.deps import AppState

log = logging.getLogger("loglens.alerting")

PERSIST_META = "alert-store"


@dataclass
class AlertingComponent:
    """The running alerting stage."""

    engine: AlertEngine
    evaluator: Evaluator
    scheduler: Scheduler
    repo: AlertRepository
    writer: AlertWriter

    # what /metrics and GET /api/v1/rules read
    @property
    def alerts(self) -> AlertsConfig:
        """The alert rules in force (after a reload: the new ones)."""
        return self.evaluator.alerts

    @property
    def stats(self) -> dict[str, RuleStats]:
        """Last evaluation of each rule."""
        return self.evaluator.stats

    @property
    def evaluations(self) -> int:
        """Evaluation passes so far."""
        return self.evaluator.evaluations

    @property
    def patterns(self) -> PatternWorker | None:
        """The template miner, when new_pattern is enabled."""
        return self.evaluator.patterns

    @property
    def series(self) -> SeriesStats:
        """The series cap at work."""
        self.evaluator.series.tracked = self.evaluator.tracked
        return self.evaluator.series

    def start(self) -> None:
        """Start the writer, then the scheduler (which restores state on its own thread)."""
        self.writer.start()
        self.scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler, write what is queued, close the connections."""
        self.scheduler.stop(timeout)
        self.writer.stop(timeout)
        self.repo.close()

    def prepare_reload(self, new: Settings) -> Callable[[], Awaitable[bool]]:
        """Config reload hook: applying waits for the evaluator thread, off the event loop."""
        return lambda: anyio.to_thread.run_sync(self.scheduler.reconfigure, new)


def build_alerting(
    settings: Settings,
    store: Store,
    *,
    sink: NotificationSink | None,
    publish: Publish | None,
    clock: Callable[[], float] = time.time,
) -> AlertingComponent:
    """Construct the alerting stage (not started); loads firing alerts and silences (small reads)."""
    repo = AlertRepository(store.cursor)
    engine = AlertEngine(settings.alerts, clock=clock, sink=sink, silence_store=repo, publish=publish)

    def overflow(dropped: int) -> None:
        engine.raise_meta(PERSIST_META, f"alert history is not being stored: {dropped}+ rows dropped", "critical")

    def persist_error(error: str | None) -> None:
        if error is None:
            engine.resolve_meta(PERSIST_META)
        else:
            engine.raise_meta(PERSIST_META, f"cannot store alerts: {error}"[:500], "critical")

    writer = AlertWriter(repo, max_rows=settings.alerts.max_queue_rows, on_overflow=overflow, on_error=persist_error)
    engine.persistence = writer
    engine.restore(repo.load_active(limit=settings.alerts.max_series * 5), repo.load_silences())
    validator = AnomalyValidator(settings.schemas.anomaly)
    evaluator = Evaluator(settings, engine, clock=clock, validator=validator, persistence=writer, publish=publish)
    scheduler = Scheduler(evaluator, restore_from=store, max_queue_logs=settings.alerts.max_queue_logs)
    if settings.alerts.rules.new_pattern.enabled:
        path = settings.storage.path.with_name(settings.storage.path.name + ".templates.json")
        evaluator.patterns = PatternWorker(settings.alerts, scheduler.on_pattern, state_path=path, clock=clock)
    return AlertingComponent(engine, evaluator, scheduler, repo, writer)


# ---- today's app wiring (the composition root replaces these) ------------------------------------
async def start_component(state: AppState) -> None:
    """App component start: build, listen to commits, run the threads."""
    notifier = state.extras.get("notifier")
    component = await anyio.to_thread.run_sync(
        lambda: build_alerting(state.settings, state.store, sink=notifier, publish=state.hub.publish)
    )
    if notifier is not None:
        notifier.meta.bind(component.engine)
    state.extras["alerting"] = component.engine
    state.extras["evaluator"] = component
    state.store.listeners.append(component.scheduler.on_commit)
    component.start()
    state.extras.setdefault("reload_hooks", []).append(component.prepare_reload)


async def stop_component(state: AppState) -> None:
    """App component stop: detach from the store and stop the threads."""
    component: AlertingComponent | None = state.extras.get("evaluator")
    if component is None:
        return
    with contextlib.suppress(ValueError):
        state.store.listeners.remove(component.scheduler.on_commit)
    notifier = state.extras.get("notifier")
    if notifier is not None:
        notifier.meta.bind(None)
    await anyio.to_thread.run_sync(component.stop)
