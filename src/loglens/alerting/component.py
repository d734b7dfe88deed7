"""The running alerting stage: what the composition root (`loglens.runtime`) builds and holds.

`AlertingComponent` keeps the repository, the writer thread, the engine, the evaluator, the
pattern worker and the scheduler together and starts and stops them in order; nothing here
looks anything up at run time. `persistence_alarm` turns the writer's trouble into the
`alert-store` meta-alert.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread

from loglens.alerting.engine import AlertEngine
from loglens.alerting.evaluator import Evaluator, RuleStats, SeriesStats
from loglens.alerting.scheduler import Scheduler
from loglens.config import AlertsConfig, Settings
from loglens.detect.pattern_worker import PatternWorker
from loglens.ports import MetaAlerts
from loglens.store.alerts import AlertRepository, AlertWriter

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


def persistence_alarm(meta: MetaAlerts) -> tuple[Callable[[int], None], Callable[[str | None], None]]:
    """The AlertWriter's overflow and error callbacks, raising/resolving the `alert-store` meta-alert."""

    def overflow(dropped: int) -> None:
        meta.raise_meta(PERSIST_META, f"alert history is not being stored: {dropped}+ rows dropped", "critical")

    def error(message: str | None) -> None:
        if message is None:
            meta.resolve_meta(PERSIST_META)
        else:
            meta.raise_meta(PERSIST_META, f"cannot store alerts: {message}"[:500], "critical")

    return overflow, error
