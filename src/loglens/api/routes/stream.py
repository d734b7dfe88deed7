"""GET /api/v1/stream: live updates for the dashboard as Server-Sent Events.

Events (each `data:` is one JSON object):
- `hello`      once per connection, so a client knows it is subscribed (and can refetch state);
- `metrics`    after commits: `{"services": [{service, minute, count, errors, rt_sum, rt_count}],
               "dead_letters", "at"}` — the *increments* of the commits since the last event;
- `alert`, `anomaly`  published by the alerting engine through `state.hub`;
- `heartbeat`  every `heartbeat_seconds` when nothing else was sent (keeps proxies and the
               client's "connected" indicator honest).

Commits are coalesced: the writer thread only merges counters under a lock and, for the first
commit of a burst, schedules a flush on the event loop; a flush runs at most every
`min_interval_seconds`. An idle server therefore pushes a commit within a few milliseconds,
and a busy one sends a bounded number of events per second however fast logs arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from loglens.api.deps import AppState, State
from loglens.api.events import EventHub
from loglens.models import iso
from loglens.store import CommitEvent

router = APIRouter(prefix="/api/v1", tags=["stream"])

EXTRA_KEY = "stream"
_SHUTDOWN_POLL_SECONDS = 0.25


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

    def __init__(
        self,
        hub: EventHub,
        settings: StreamSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
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


def _frame(kind: str, data: Any) -> bytes:
    """One SSE event; orjson never emits newlines, so `data` fits on one line."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data, default=str) + b"\n\n"


def _server_closing(receive: Any, initial_keep_alive: bool | None) -> bool:
    """True once uvicorn has asked this connection to finish (server shutdown).

    uvicorn's graceful shutdown only flips the running request cycle's `keep_alive` to False and
    then waits for the response to end — an endless stream would hold the server (and the DuckDB
    file) open. `receive` is a bound method of that cycle, so the flip is visible here. Other
    servers simply lack the attribute and rely on their own shutdown timeout.
    """
    if not initial_keep_alive:
        return False
    return getattr(getattr(receive, "__self__", None), "keep_alive", True) is False


async def _events(request: Request, state: AppState) -> AsyncIterator[bytes]:
    settings: StreamSettings = state.extras.get(EXTRA_KEY + ".settings") or StreamSettings()
    receive = request.receive
    keep_alive = getattr(getattr(receive, "__self__", None), "keep_alive", None)
    async with state.hub.subscribe() as queue:
        yield f"retry: {settings.retry_ms}\n\n".encode()
        yield _frame("hello", {"at": iso(datetime.now(UTC)), "heartbeat_seconds": settings.heartbeat_seconds})
        last_sent = time.monotonic()
        while True:
            timeout = min(_SHUTDOWN_POLL_SECONDS, max(0.0, last_sent + settings.heartbeat_seconds - time.monotonic()))
            try:
                kind, data = await asyncio.wait_for(queue.get(), timeout=timeout)
            except TimeoutError:
                if _server_closing(receive, keep_alive):
                    return
                if time.monotonic() - last_sent >= settings.heartbeat_seconds:
                    yield _frame("heartbeat", {"at": iso(datetime.now(UTC))})
                    last_sent = time.monotonic()
                continue
            yield _frame(kind, data)
            last_sent = time.monotonic()


@router.get(
    "/stream",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(request: Request, state: State) -> StreamingResponse:
    """`metrics`, `alert`, `anomaly` and `heartbeat` events; pass `?token=` when an API token is set."""
    return StreamingResponse(
        _events(request, state),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


async def start_stream(state: AppState) -> None:
    """Component start: publish `metrics` events from store commits."""
    settings = state.extras.setdefault(EXTRA_KEY + ".settings", StreamSettings())
    publisher = MetricsPublisher(state.hub, settings)
    publisher.attach(asyncio.get_running_loop())
    state.extras[EXTRA_KEY + ".publisher"] = publisher
    state.store.listeners.append(publisher.on_commit)


async def stop_stream(state: AppState) -> None:
    """Component stop: detach from the store."""
    publisher: MetricsPublisher | None = state.extras.pop(EXTRA_KEY + ".publisher", None)
    if publisher is None:
        return
    if publisher.on_commit in state.store.listeners:
        state.store.listeners.remove(publisher.on_commit)
    publisher.detach()
