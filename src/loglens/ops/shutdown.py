"""Graceful shutdown for `loglens serve`: SIGTERM/SIGINT drain before uvicorn stops.

On the first signal the server keeps listening but ingest answers 503 with Retry-After (the
pipeline's `draining` flag), while requests already admitted finish, the store's queue empties
and the notification outbox has nothing pending — for at most `server.shutdown_timeout_seconds`.
Then uvicorn's own shutdown runs: connections close, the app lifespan stops the components and
`Store.close()` commits anything still queued and checkpoints. A second signal skips the wait,
a third forces the exit. The signal is not re-raised afterwards (uvicorn's default), so a
graceful stop exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import uvicorn

if TYPE_CHECKING:
    from loglens.ingest.pipeline import IngestPipeline
    from loglens.notify.service import NotificationService
    from loglens.store import Store

log = logging.getLogger("loglens.ops.shutdown")


class Drainable(Protocol):
    """The parts a drain waits for (the runtime provides them)."""

    @property
    def pipeline(self) -> IngestPipeline:
        """Admits requests; its `draining` flag makes ingest answer 503."""
        ...

    @property
    def store(self) -> Store:
        """Holds the commit queue."""
        ...

    @property
    def notifier(self) -> NotificationService:
        """Holds the notification outbox."""
        ...


def drained(state: Drainable) -> bool:
    """No admitted request in flight, nothing waiting for commit, nothing deliverable pending in the
    outbox (a failing channel's rows stay durable and resume after the restart)."""
    if state.pipeline.in_flight or state.store.queue_depth:
        return False
    return state.notifier.deliverable_pending() == 0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that drains loglens before its normal shutdown.

    `parts` returns the running server's parts, or None before the app has started.
    """

    def __init__(self, config: uvicorn.Config, timeout_s: float, parts: Callable[[], Drainable | None]) -> None:
        super().__init__(config)
        self.timeout_s = timeout_s
        self.drain_requested = False
        self._deadline: float | None = None
        self._checking = False
        self._parts = parts

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: 1st drains, 2nd stops now, 3rd forces. Runs between bytecodes: set flags only."""
        if self.should_exit:
            self.force_exit = True
        elif self.drain_requested:
            self.should_exit = True
        else:
            self.drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        """Each 0.1 s: advance the drain, then let uvicorn decide as usual."""
        if self.drain_requested and not self.should_exit and not self._checking:
            self._checking = True
            try:
                await self._drain_step()
            finally:
                self._checking = False
        return await super().on_tick(counter)

    async def _drain_step(self) -> None:
        state = self._parts()
        if state is None:
            self.should_exit = True
            return
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout_s
            state.pipeline.draining = True
            log.info(
                "draining before shutdown", extra={"timeout_s": self.timeout_s, "queue_depth": state.store.queue_depth}
            )
        if await asyncio.to_thread(drained, state):
            log.info("drained; shutting down")
            self.should_exit = True
        elif time.monotonic() >= self._deadline:
            log.warning(
                "drain timeout reached; shutting down with work pending",
                extra={"queue_depth": state.store.queue_depth, "in_flight": state.pipeline.in_flight},
            )
            self.should_exit = True
