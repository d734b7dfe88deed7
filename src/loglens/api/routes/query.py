"""Read endpoints: time series, summary, services, log search, dead letters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query

from loglens import queries
from loglens.api.contract import unprocessable
from loglens.api.deps import StoreDep
from loglens.api.responses import DeadLettersOut, LogsOut, ServicesOut, SummaryOut, TimeseriesOut
from loglens.models import LEVELS, utcnow
from loglens.timeparse import Instant

router = APIRouter(prefix="/api/v1", tags=["query"])


@router.get("/timeseries", response_model=TimeseriesOut)
async def timeseries(
    store: StoreDep,
    metric: Literal["volume", "error_rate", "avg_response_time", "p95_response_time"] = "volume",
    service: str | None = None,
    minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
) -> dict[str, Any]:
    """One point per minute (UTC) for the last `minutes` minutes, per service."""
    return await anyio.to_thread.run_sync(queries.timeseries, store, metric, service, minutes, utcnow())


@router.get("/metrics/summary", response_model=SummaryOut)
async def metrics_summary(
    store: StoreDep,
    minutes: Annotated[int, Query(ge=1, le=10080)] = 60,
    top: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """Average response time per service, requests per user, error-rate trend, most active services."""
    return await anyio.to_thread.run_sync(queries.summary, store, minutes, top, utcnow())


@router.get("/services", response_model=ServicesOut)
async def services(store: StoreDep) -> dict[str, Any]:
    """Every service seen, with last-seen (arrival) time and counts."""
    return {"services": await anyio.to_thread.run_sync(queries.services, store, utcnow())}


@router.get("/logs", response_model=LogsOut)
async def search_logs(
    store: StoreDep,
    service: str | None = None,
    level: Annotated[str | None, Query(description="One level or a comma-separated list")] = None,
    q: Annotated[str | None, Query(max_length=1000, description="Case-insensitive text in the message")] = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Stored logs, newest first, paged with `next_cursor`."""
    levels = [lv.strip().upper() for lv in level.split(",") if lv.strip()] if level else None
    if levels and (bad := [lv for lv in levels if lv not in LEVELS]):
        raise unprocessable("query", "level", f"unknown level(s) {bad}; use {', '.join(LEVELS)}")
    try:
        return await anyio.to_thread.run_sync(
            lambda: queries.search_logs(
                store, service=service, levels=levels, q=q, since=since, until=until, limit=limit, cursor=cursor
            )
        )
    except ValueError as exc:  # e.g. a malformed cursor
        raise unprocessable("query", "cursor", str(exc)) from None


@router.get("/dead-letter", response_model=DeadLettersOut)
async def dead_letter(
    store: StoreDep,
    reason: Annotated[str | None, Query(max_length=1000)] = None,
    source: str | None = None,
    since: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Rejected records with their reason, source, arrival time and (truncated) raw text."""
    try:
        return await anyio.to_thread.run_sync(
            lambda: queries.dead_letters(store, reason=reason, source=source, since=since, limit=limit, cursor=cursor)
        )
    except ValueError as exc:  # e.g. a malformed cursor
        raise unprocessable("query", "cursor", str(exc)) from None
