"""Runtime component: archive closed hours of the live store as Parquet, then let retention go.

Every `archive.interval_seconds` it runs `store.archive.export` on a read cursor of the running
store (DuckDB MVCC: ingest keeps committing meanwhile) for the hours that ended at least
`archive.delay_seconds` ago. Hours that gained late logs since they were archived are rewritten
(the manifest compares counts and max ids), so the archive converges on the store.

Retention: with `archive.live_retention_hours` set, archived logs stay in the live store that
long. The store's own retention step deletes by age (`Store.retention_days`); the archiver lowers
that age to the live retention, but never below the age of the oldest hour not yet archived —
so no log is deleted from the store before it is in the archive — and never raises it above
`storage.retention_days`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import duckdb

from loglens.config import ArchiveConfig
from loglens.errors import LoglensError
from loglens.ops.tasks import cancel_task, start_task
from loglens.store.archive import HOUR_US, ArchiveError, ExportReport, export, hours_in_store, load_manifest

if TYPE_CHECKING:
    from loglens.store import Store

log = logging.getLogger("loglens.ops.archiver")


class Archiver:
    """Periodic export of closed hours of `store` into `settings.directory`."""

    name = "archiver"

    def __init__(self, store: Store, settings: ArchiveConfig, retention_days: float) -> None:
        self.store = store
        self.settings = settings
        self.retention_days = retention_days  # storage.retention_days: the live store's ceiling
        self.last_report: ExportReport | None = None
        self.last_error: str | None = None
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def run_once(self, now_s: float | None = None) -> ExportReport:
        """Archive what is due at wall time `now_s` and adjust the store's retention."""
        now_us = int((time.time() if now_s is None else now_s) * 1_000_000)
        closed = now_us - int(self.settings.delay_seconds * 1_000_000)  # hours that ended by then
        with self.store.reader() as cur:
            report = export(cur, self.settings.directory, closed_before_us=closed)
            self._adjust_retention(cur, now_us)
        self.last_report, self.last_error = report, None
        self.runs += 1
        if report.written:
            log.info("archived hours", extra={"hours": report.written, "logs": report.rows})
        return report

    def _adjust_retention(self, cur: Any, now_us: int) -> None:
        keep_h = self.settings.live_retention_hours
        if keep_h is None:
            return
        configured_days = self.retention_days
        archived = load_manifest(self.settings.directory)
        pending = [h for h in hours_in_store(cur, None, None) if h.key not in archived]
        keep_us = keep_h * 3_600_000_000
        if pending:  # nothing newer than the oldest unarchived hour may go
            keep_us = max(keep_us, now_us - pending[0].start_us + HOUR_US)
        self.store.retention_days = min(configured_days, keep_us / 86_400_000_000)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_seconds)
            try:
                await asyncio.to_thread(self.run_once)
            except (
                ArchiveError,
                OSError,
                duckdb.Error,
                LoglensError,
            ) as exc:  # disk full, directory gone: retry next time
                self.last_error = str(exc)
                log.warning("archiving failed; retrying next interval", extra={"error": str(exc)})

    async def start(self) -> None:
        """Start archiving on the running event loop."""
        self._task = start_task(self._run(), "loglens-archiver")

    async def stop(self) -> None:
        """Stop archiving (an export in flight finishes its hour in its thread)."""
        task, self._task = self._task, None
        await cancel_task(task)
