"""Live `metrics` events for the SSE stream: store commits coalesced onto the EventHub.

Commits are coalesced: the writer thread only merges counters under a lock and, for the first
commit of a burst, schedules a flush on the event loop; a flush runs at most every
`min_interval_seconds`. An idle server therefore pushes a commit within a few milliseconds,
and a busy one sends a bounded number of events per second however fast logs arrive.
`MetricsPublisher` is a runtime component (started and stopped by `loglens.runtime`); the
route in `api/routes/stream.py` only subscribes to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loglens.api.events import EventHub
from loglens.models import CommitEvent, iso
from loglens.store import Store


@dataclass
class StreamSettings:
    """Timing of the stream; mutable so tests (and future config) can shorten it."""

    heartbeat_seconds: float = 10.0
    min_interval_seconds: float = 0.1
    retry_ms: int = 1000


class MetricsPublisher:
    """Turns store commits into coalesced `metrics` events on an EventHub.

    `on_commit` runs in the store's writer thread and does only dictionary arithmetic;
    publishing happens on the event loop, never blocking the writer.
    """

    name = "stream"

    def __init__(
        self,
        hub: EventHub,
        settings: StreamSettings,
        clock: Callable[[], float] = time.monotonic,
        store: Store | None = None,
    ) -> None:
        self.hub = hub
        self.store = store
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, datetime], list[float]] = {}
        self._dead_letters = 0
        self._scheduled = False
        self._last_flush = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.events_published = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's loop; flushes are scheduled there."""
        self._loop = loop

    def detach(self) -> None:
        """Stop scheduling flushes (app shutdown)."""
        self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def start(self) -> None:
        """Component start: bind to the running loop and listen to the store's commits."""
        self.attach(asyncio.get_running_loop())
        if self.store is not None:
            self.store.listeners.append(self.on_commit)

    async def stop(self) -> None:
        """Component stop: detach from the store and the loop."""
        if self.store is not None and self.on_commit in self.store.listeners:
            self.store.listeners.remove(self.on_commit)
        self.detach()

    def on_commit(self, event: CommitEvent) -> None:
        """Store listener (writer thread): merge the commit's per-minute counters."""
        if self.hub.subscriber_count == 0:
            return  # nobody is watching: keep the writer's hot path free
        minute = event.partials.minute
        cols = (
            minute.select(["service", "minute", "count", "error", "fatal", "rt_sum", "rt_count"]).to_pydict()
            if minute.num_rows
            else None
        )
        with self._lock:
            if cols is not None:
                for svc, m, count, err, fatal, rt_sum, rt_count in zip(
                    cols["service"],
                    cols["minute"],
                    cols["count"],
                    cols["error"],
                    cols["fatal"],
                    cols["rt_sum"],
                    cols["rt_count"],
                    strict=True,
                ):
                    acc = self._pending.setdefault((svc, m), [0, 0, 0.0, 0])
                    acc[0] += count
                    acc[1] += err + fatal
                    acc[2] += rt_sum or 0.0
                    acc[3] += rt_count
            self._dead_letters += event.dead_letters
            if self._scheduled or (not self._pending and not self._dead_letters):
                return
            self._scheduled = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing during shutdown
            loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        delay = max(0.0, self._last_flush + self.settings.min_interval_seconds - self._clock())
        if delay == 0.0:
            self.flush()
        elif self._loop is not None:
            self._timer = self._loop.call_later(delay, self.flush)

    def flush(self) -> dict[str, Any] | None:
        """Publish what accumulated since the last flush (on the loop); returns the payload."""
        with self._lock:
            pending, dead = self._pending, self._dead_letters
            self._pending, self._dead_letters = {}, 0
            self._scheduled = False
            self._timer = None
            self._last_flush = self._clock()
        if not pending and not dead:
            return None
        payload = {
            "services": [
                {
                    "service": svc,
                    "minute": iso(m),
                    "count": int(c),
                    "errors": int(e),
                    "rt_sum": round(rs, 3),
                    "rt_count": int(rc),
                }
                for (svc, m), (c, e, rs, rc) in sorted(pending.items())
            ],
            "dead_letters": dead,
            "at": iso(datetime.now(UTC)),
        }
        self.hub.publish("metrics", payload)
        self.events_published += 1
        return payload
