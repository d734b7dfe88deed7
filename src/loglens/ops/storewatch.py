"""Store health watch: turns a failing store (disk full, I/O error) into a critical meta-alert.

The writer thread records its last commit failure in `Store.last_error` (and clears it on the
next successful commit). This runtime component polls that field and raises / resolves a
meta-alert through the `MetaAlerts` port, so operators see the outage on the dashboard and
through the notifiers while ingest answers 503 + Retry-After. Polling keeps the writer thread
free of any alerting work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from loglens.ops.tasks import cancel_task, start_task
from loglens.ports import MetaAlerts

log = logging.getLogger("loglens.ops.storewatch")

META_NAME = "store"  # the meta-alert's service label: GET /api/v1/alerts shows rule=meta, service=store
POLL_SECONDS = 0.5


class WatchedStore(Protocol):
    """What the watch reads of the store."""

    @property
    def last_error(self) -> str | None:
        """The last commit failure, None once a commit succeeds again."""
        ...


class StoreWatch:
    """Raise a meta-alert while `store.last_error` is set; resolve it once a commit succeeds."""

    name = "storewatch"

    def __init__(self, store: WatchedStore, meta: MetaAlerts | None, poll_seconds: float = POLL_SECONDS) -> None:
        self.store = store
        self.meta = meta
        self.poll_seconds = poll_seconds
        self.raised = False
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """One look at the store; raise or resolve the meta-alert on a change."""
        error = self.store.last_error
        if error is not None and not self.raised:
            self.raised = True
            log.error("store is failing writes; ingest answers 503", extra={"error": error})
            await self._call(
                "raise_meta", META_NAME, f"store cannot commit (ingest answers 503): {error}"[:500], "critical"
            )
        elif error is None and self.raised:
            self.raised = False
            log.warning("store recovered; writes succeed again")
            await self._call("resolve_meta", META_NAME)

    async def _call(self, method: str, *args: str) -> None:
        if self.meta is None:
            return
        try:
            # the engine may persist the alert (DuckDB I/O): keep it off the event loop
            await asyncio.to_thread(getattr(self.meta, method), *args)
        except Exception:  # the alert store may be failing too; the log line above still stands
            log.exception("store meta-alert hook failed", extra={"method": method})

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.poll_seconds)

    async def start(self) -> None:
        """Start polling on the running event loop."""
        self._task = start_task(self._run(), "loglens-storewatch")

    async def stop(self) -> None:
        """Stop polling."""
        task, self._task = self._task, None
        await cancel_task(task)
