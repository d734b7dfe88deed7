"""GET /api/v1/stream: live updates for the dashboard as Server-Sent Events.

Events (each `data:` is one JSON object):
- `hello`      once per connection, so a client knows it is subscribed (and can refetch state);
- `metrics`    after commits: `{"services": [{service, minute, count, errors, rt_sum, rt_count}],
               "dead_letters", "at"}` — the *increments* of the commits since the last event;
- `alert`, `anomaly`  published by the alerting engine through `state.hub`;
- `heartbeat`  every `heartbeat_seconds` when nothing else was sent (keeps proxies and the
               client's "connected" indicator honest).

The `metrics` events come from `api/live.py`'s `MetricsPublisher`, a runtime component; this
route only subscribes to the hub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from loglens.api.deps import HubDep, StreamSettingsDep
from loglens.api.events import EventHub
from loglens.api.live import StreamSettings
from loglens.models import iso

router = APIRouter(prefix="/api/v1", tags=["stream"])

EXTRA_KEY = "stream"
_SHUTDOWN_POLL_SECONDS = 0.25


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


async def _events(request: Request, hub: EventHub, settings: StreamSettings) -> AsyncIterator[bytes]:
    receive = request.receive
    keep_alive = getattr(getattr(receive, "__self__", None), "keep_alive", None)
    async with hub.subscribe() as queue:
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
async def stream(request: Request, hub: HubDep, settings: StreamSettingsDep) -> StreamingResponse:
    """`metrics`, `alert`, `anomaly` and `heartbeat` events; pass `?token=` when an API token is set."""
    return StreamingResponse(
        _events(request, hub, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
