"""Read side of the store: time series, summaries, services, log search.

Every function takes a `Store` and returns plain JSON-ready dicts; the API routes are thin
wrappers. Times are UTC; the API renders them as ISO 8601 with a Z. Metric tables are views
that merge the loader's append-only partials (see sql/013_wal_loader.sql), so a query never
sees a half-merged minute. `Store.query` waits until DuckDB holds every acknowledged log, so a
client reads its own writes; dead-letter reads live in deadletters.py.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from loglens import metrics
from loglens.models import iso
from loglens.store import Store
from loglens.store.registry import ServiceInfo

Metric = Literal["volume", "error_rate", "avg_response_time", "p95_response_time"]
METRICS: tuple[str, ...] = ("volume", "error_rate", "avg_response_time", "p95_response_time")


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=us)


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def minute_grid(now: datetime, minutes: int) -> list[datetime]:
    """The `minutes` minute starts ending with the current (partial) minute."""
    end = _naive_utc(now).replace(second=0, microsecond=0)
    return [end - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]


def series_names(
    store: Store, minutes: int, now: datetime, *, contains: str | None = None, top: int | None = None
) -> list[str]:
    """Services with data in the last `minutes` minutes: by name, or the `top` N by volume.

    Chosen in SQL before any point is built, so a response over 100,000 services costs what
    its page costs, not what every series would.
    """
    grid = minute_grid(now, minutes)
    where = "minute >= ? AND minute <= ?"
    params: list[Any] = [grid[0], grid[-1]]
    if contains:
        where += " AND contains(lower(service), ?)"
        params.append(contains.lower())
    order = "sum(count) DESC, service" if top is not None else "service"
    sql = f"SELECT service FROM metrics_minute WHERE {where} GROUP BY service ORDER BY {order}"
    if top is not None:
        sql += " LIMIT ?"
        params.append(top)
    return [r[0] for r in store.query(sql, params)]


def timeseries(
    store: Store,
    metric: str,
    service: str | None,
    minutes: int,
    now: datetime,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """One point per minute per service; volume/error_rate are 0 in empty minutes, latency null.

    `names` restricts the series to those services (a page chosen by `series_names`).
    """
    grid = minute_grid(now, minutes)
    start, end = grid[0], grid[-1]
    where = "minute >= ? AND minute <= ?"
    params: list[Any] = [start, end]
    if service:
        where += " AND service = ?"
        params.append(service)
    elif names is not None:
        where += " AND service IN (SELECT unnest(?::VARCHAR[]))"
        params.append(names)
    values: dict[str, dict[datetime, float | None]] = defaultdict(dict)
    if metric == "p95_response_time":
        rows = store.query(
            f"SELECT service, minute, list(bucket ORDER BY bucket), list(count ORDER BY bucket) "
            f"FROM latency_sketch WHERE {where} GROUP BY service, minute",
            params,
        )
        for svc, minute, buckets, counts in rows:
            values[svc][minute] = metrics.quantile(buckets, counts, 0.95)
        services = set(values)
        if not service:
            services |= {
                r[0] for r in store.query(f"SELECT DISTINCT service FROM metrics_minute WHERE {where}", params)
            }
    else:
        rows = store.query(
            f"SELECT service, minute, count, error + fatal, rt_sum, rt_count FROM metrics_minute WHERE {where}",
            params,
        )
        for svc, minute, count, errors, rt_sum, rt_count in rows:
            if metric == "volume":
                values[svc][minute] = float(count)
            elif metric == "error_rate":
                values[svc][minute] = errors / count if count else 0.0
            else:
                values[svc][minute] = rt_sum / rt_count if rt_count else None
        services = set(values)
    if service:
        services = {service}
    elif names is not None:
        services = set(names)
    order = names if names is not None and not service else sorted(services)
    empty: float | None = 0.0 if metric in ("volume", "error_rate") else None
    series = [
        {
            "service": svc,
            "points": [{"t": iso(m), "v": values.get(svc, {}).get(m, empty)} for m in grid],
        }
        for svc in order
    ]
    return {"metric": metric, "minutes": minutes, "start": iso(start), "end": iso(end), "series": series}


def summary(store: Store, minutes: int, top: int, now: datetime) -> dict[str, Any]:
    """Average latency per service, requests per user, 5-minute error-rate trend, most active services."""
    grid = minute_grid(now, minutes)
    start, end = grid[0], grid[-1]
    per_service = store.query(
        "SELECT service, sum(count), sum(error + fatal), sum(rt_sum), sum(rt_count) FROM metrics_minute "
        "WHERE minute >= ? AND minute <= ? GROUP BY service ORDER BY sum(count) DESC, service",
        [start, end],
    )
    users = store.query(
        "SELECT user_id, sum(count) AS n FROM user_minute WHERE minute >= ? AND minute <= ? "
        "GROUP BY user_id ORDER BY n DESC, user_id LIMIT ?",
        [start, end, top],
    )
    distinct_users = store.query(
        "SELECT count(DISTINCT user_id) FROM user_minute WHERE minute >= ? AND minute <= ?", [start, end]
    )[0][0]
    trend_grid = minute_grid(now, 5)
    trend_rows = {
        r[0]: (int(r[1]), int(r[2]))
        for r in store.query(
            "SELECT minute, sum(count), sum(error + fatal) FROM metrics_minute "
            "WHERE minute >= ? AND minute <= ? GROUP BY minute",
            [trend_grid[0], trend_grid[-1]],
        )
    }
    trend = []
    for m in trend_grid:
        total, errors = trend_rows.get(m, (0, 0))
        trend.append({"t": iso(m), "total": total, "errors": errors, "error_rate": errors / total if total else 0.0})
    return {
        "window": {"start": iso(start), "end": iso(end), "minutes": minutes},
        "avg_response_time_ms": [
            {"service": s, "avg_ms": (rs / rc) if rc else None, "samples": int(rc)} for s, _, _, rs, rc in per_service
        ],
        "requests_per_user": [{"user_id": u, "count": int(n)} for u, n in users],
        "distinct_users": int(distinct_users),
        "error_rate_trend": trend,
        "most_active_services": [
            {"service": s, "count": int(c), "errors": int(e), "error_rate": e / c if c else 0.0}
            for s, c, e, _, _ in per_service[:top]
        ],
    }


def busiest_services(store: Store, now: datetime, n: int, minutes: int = 5) -> list[str]:
    """The `n` services with the most logs in the last `minutes` minutes, busiest first."""
    since = _naive_utc(now).replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    rows = store.query(
        "SELECT service FROM metrics_minute WHERE minute >= ? GROUP BY service ORDER BY sum(count) DESC, service LIMIT ?",
        [since, n],
    )
    return [r[0] for r in rows]


def services(store: Store, now: datetime, page: list[ServiceInfo] | None = None) -> list[dict[str, Any]]:
    """Services with arrival-time last-seen and counts (total and the last 5 minutes).

    `page`: only these registry entries (a filtered, paged slice); default every service.
    """
    now_naive = _naive_utc(now)
    minute = now_naive.replace(second=0, microsecond=0)
    infos = store.services() if page is None else page  # the in-memory registry: as fresh as the acknowledgements
    where = "minute >= ?"
    params: list[Any] = [minute - timedelta(minutes=4)]
    if page is not None:
        where += " AND service IN (SELECT unnest(?::VARCHAR[]))"
        params.append([i.service for i in page])
    recent = {
        r[0]: r[1:]
        for r in store.query(
            "SELECT service, sum(count), sum(error + fatal), sum(rt_sum), sum(rt_count) FROM metrics_minute "
            f"WHERE {where} GROUP BY service",
            params,
        )
    }
    sketches = {
        r[0]: metrics.quantile(r[1], r[2], 0.95)
        for r in store.query(
            "SELECT service, list(bucket), list(count) FROM "
            f"(SELECT service, bucket, sum(count) AS count FROM latency_sketch WHERE {where} "
            "GROUP BY service, bucket) GROUP BY service",
            params,
        )
    }
    out = []
    for info in infos:
        svc = info.service
        last_seen = _from_us(info.last_seen_us)
        count5, err5, rs, rc = recent.get(svc, (0, 0, 0.0, 0))
        out.append(
            {
                "service": svc,
                "first_seen": iso(_from_us(info.first_seen_us)),
                "last_seen": iso(last_seen),
                "last_event_ts": iso(_from_us(info.last_event_us)),
                "seconds_since_last_seen": max(0.0, (now_naive - last_seen).total_seconds()),
                "total": int(info.total),
                "errors": int(info.errors),
                "volume_per_min": (count5 or 0) / 5,
                "error_rate": (err5 / count5) if count5 else 0.0,
                "avg_response_time_ms": (rs / rc) if rc else None,
                "p95_response_time_ms": sketches.get(svc),
            }
        )
    return out


def encode_cursor(*parts: int) -> str:
    """Opaque paging cursor."""
    return base64.urlsafe_b64encode(":".join(str(p) for p in parts).encode()).decode()


def decode_cursor(cursor: str, n: int) -> list[int]:
    """Inverse of encode_cursor; ValueError on a malformed cursor."""
    try:
        parts = [int(p) for p in base64.urlsafe_b64decode(cursor.encode()).decode().split(":")]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("invalid cursor") from None
    if len(parts) != n:
        raise ValueError("invalid cursor")
    return parts


def _log_row(row: tuple[Any, ...]) -> dict[str, Any]:
    (id_, ts, received, level, service, message, user, ip, rt, trace, meta, late, source) = row
    return {
        "id": id_,
        "timestamp": iso(ts),
        "received_at": iso(received),
        "level": level,
        "service": service,
        "message": message,
        "user_id": user,
        "ip_address": ip,
        "response_time_ms": rt,
        "trace_id": trace,
        "metadata": orjson.loads(meta) if meta else None,
        "late": late,
        "source": source,
    }


def search_logs(
    store: Store,
    *,
    service: str | None = None,
    levels: list[str] | None = None,
    q: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Stored logs newest first (event time, then id), filtered and paged by an opaque cursor."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if service:
        where.append("service = ?")
        params.append(service)
    if levels:
        where.append("level IN (SELECT unnest(?))")
        params.append(levels)
    if q:
        where.append("contains(lower(message), lower(?))")
        params.append(q)
    if since:
        where.append("ts >= ?")
        params.append(_naive_utc(since))
    if until:
        where.append("ts < ?")
        params.append(_naive_utc(until))
    if cursor:
        ts_us, last_id = decode_cursor(cursor, 2)
        where.append("(epoch_us(ts) < ? OR (epoch_us(ts) = ? AND id < ?))")
        params += [ts_us, ts_us, last_id]
    rows = store.query(
        "SELECT id, ts, received_at, level, service, message, user_id, ip_address, response_time_ms, "
        f"trace_id, metadata, late, source FROM logs WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, id DESC LIMIT ?",
        [*params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        ts_us = (last[1] - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        next_cursor = encode_cursor(ts_us, last[0])
    return {"logs": [_log_row(r) for r in rows], "next_cursor": next_cursor}
