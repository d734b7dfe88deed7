"""In-process publish/subscribe for live updates (SSE). Thread-safe publish, bounded per client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class EventHub:
    """Fan-out of small JSON events to every connected subscriber.

    `publish` may be called from any thread (e.g. the store's writer thread). A slow subscriber
    loses its oldest events rather than growing memory without bound.
    """

    def __init__(self, max_queue: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[tuple[str, Any]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_queue = max_queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's event loop (done in the app lifespan)."""
        self._loop = loop

    @property
    def subscriber_count(self) -> int:
        """Connected subscribers (SSE clients)."""
        return len(self._subscribers)

    def publish(self, kind: str, data: Any) -> None:
        """Send `data` as event `kind` to all subscribers; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(kind, data)
        else:
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(self._deliver, kind, data)

    def _deliver(self, kind: str, data: Any) -> None:
        for q in list(self._subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait((kind, data))

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
        """A queue receiving every event published while the context is open."""
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(self.max_queue)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
