"""Read endpoints: time series, summary, services, log search, dead letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from loglens.api.contract import unprocessable
from loglens.api.deps import StoreDep
from loglens.api.responses import DeadLettersOut, LogsOut, ServicesOut, SummaryOut, TimeseriesOut
from loglens.models import LEVELS, utcnow
from loglens.store import deadletters, queries
from loglens.timeparse import Instant

router = APIRouter(prefix="/api/v1", tags=["query"])


# Bounded by default: with 100,000 services an unbounded answer is tens of megabytes.
DEFAULT_PAGE = 1000
Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size; `next_offset` gives the next page.")]
Offset = Annotated[int, Query(ge=0, description="Items to skip: the `next_offset` of the previous page.")]


def _page(items: list[Any], limit: int, offset: int) -> tuple[list[Any], int | None]:
    """A slice of `items` and the offset of the next slice (None: this was the last)."""
    page = items[offset : offset + limit]
    return page, offset + limit if len(items) > offset + limit else None


async def _encoded(build: Callable[[], dict[str, Any]]) -> Response:
    """Query, shape and encode in a worker thread: a 48 MB body must not stall the event loop."""
    return Response(await anyio.to_thread.run_sync(lambda: orjson.dumps(build())), media_type="application/json")


@router.get("/timeseries", response_model=TimeseriesOut)
async def timeseries(
    store: StoreDep,
    metric: Literal["volume", "error_rate", "avg_response_time", "p95_response_time"] = "volume",
    service: str | None = None,
    minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
    top: Annotated[int | None, Query(ge=1, le=10_000, description="Only the N series with the most volume.")] = None,
    q: Annotated[str | None, Query(max_length=500, description="Only services whose name contains this.")] = None,
    limit: Limit = DEFAULT_PAGE,
    offset: Offset = 0,
) -> Response:
    """One point per minute (UTC) for the last `minutes` minutes, per service; `top`/`q`/`limit`/`offset` bound it.

    Series are ordered by name, or by volume with `top`; the page is chosen before any point is built.
    """

    def build() -> dict[str, Any]:
        now = utcnow()
        if service:
            return queries.timeseries(store, metric, service, minutes, now)
        names = queries.series_names(store, minutes, now, contains=q, top=top)
        page, next_offset = _page(names, limit, offset)
        body = queries.timeseries(store, metric, None, minutes, now, names=page)
        body["next_offset"] = next_offset
        return body

    return await _encoded(build)


@router.get("/metrics/summary", response_model=SummaryOut)
async def metrics_summary(
    store: StoreDep,
    minutes: Annotated[int, Query(ge=1, le=10080)] = 60,
    top: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """Average response time per service, requests per user, error-rate trend, most active services."""
    return await anyio.to_thread.run_sync(queries.summary, store, minutes, top, utcnow())


@router.get("/services", response_model=ServicesOut)
async def services(
    store: StoreDep,
    q: Annotated[str | None, Query(max_length=500, description="Only services whose name contains this.")] = None,
    top: Annotated[
        int | None, Query(ge=1, le=10_000, description="The N busiest services of the last 5 minutes, busiest first.")
    ] = None,
    limit: Limit = DEFAULT_PAGE,
    offset: Offset = 0,
) -> Response:
    """Services seen (by name, or busiest first with `top`), with last-seen (arrival) time and counts.

    `q`/`top`/`limit`/`offset` bound the answer; `total` counts every matching service.
    """

    def build() -> dict[str, Any]:
        now = utcnow()
        found = store.services()  # the in-memory registry, sorted by name
        if q:
            needle = q.lower()
            found = [s for s in found if needle in s.service.lower()]
        total = len(found)
        if top is not None:
            by_name = {s.service: s for s in found}
            found = [by_name[n] for n in queries.busiest_services(store, now, top) if n in by_name]
        page, next_offset = _page(found, limit, offset)
        return {"services": queries.services(store, now, page), "total": total, "next_offset": next_offset}

    return await _encoded(build)


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
            lambda: deadletters.dead_letters(
                store, reason=reason, source=source, since=since, limit=limit, cursor=cursor
            )
        )
    except ValueError as exc:  # e.g. a malformed cursor
        raise unprocessable("query", "cursor", str(exc)) from None
