"""Per-minute aggregation of validated logs in DuckDB: `metrics.aggregate` as one SQL scan.

The same partials as `loglens.metrics.aggregate` (the server's pure aggregation) — per
(service, minute) counters, latency sketch buckets and per-user counts — plus the per-second
counts the threshold rules replay on, all from one `GROUP BY GROUPING SETS` over any DuckDB
relation with the validated columns (`ts, level, service, user_id, response_time_ms, late`):
checked NDJSON lines, the store's `logs` table or Parquet archives. A test keeps it equal to
`metrics.aggregate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.models import ERROR_LEVELS

SECONDS_SCHEMA = pa.schema(
    [("service", pa.string()), ("second", pa.timestamp("us")), ("count", pa.int64()), ("errors", pa.int64())]
)
AGG_COLUMNS = ("ts", "level", "service", "user_id", "response_time_ms", "late")

# Bucket index as `metrics.sketch_buckets`: ceil(ln(v) / ln(gamma)), values below _MIN_VALUE share one.
_BUCKET = (
    f"CASE WHEN response_time_ms IS NULL THEN NULL WHEN response_time_ms >= {metrics._MIN_VALUE!r}::DOUBLE "
    f"THEN ceil(ln(response_time_ms) / {metrics._LOG_GAMMA!r}::DOUBLE)::INTEGER ELSE {metrics.ZERO_BUCKET} END"
)
_ERRORS = ", ".join(f"'{lv}'" for lv in sorted(ERROR_LEVELS))


@dataclass(frozen=True, slots=True)
class Window:
    """Which validated logs count: event time in [since, until) and one service (None = all)."""

    since_us: int | None = None
    until_us: int | None = None
    service: str | None = None

    def where(self) -> tuple[str, list[object]]:
        """SQL condition on `ts`/`service` and its parameters."""
        conds: list[str] = ["true"]
        params: list[object] = []
        if self.since_us is not None:
            conds.append("ts >= make_timestamp(?)")
            params.append(self.since_us)
        if self.until_us is not None:
            conds.append("ts < make_timestamp(?)")
            params.append(self.until_us)
        if self.service is not None:
            conds.append("service = ?")
            params.append(self.service)
        return " AND ".join(conds), params


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Partials and per-second counts of the logs inside the window, and how many were outside."""

    partials: metrics.Partials
    seconds: pa.Table
    kept: int
    filtered_out: int


def _sql(source: str, where: str) -> str:
    levels = ", ".join(f"count(*) FILTER (WHERE level = '{name.upper()}') AS {name}" for name in metrics.LEVEL_COLUMNS)
    return f"""
WITH a AS (
  SELECT service, date_trunc('minute', ts) AS minute, date_trunc('second', ts) AS second, level, late,
         response_time_ms, user_id, {_BUCKET} AS bucket
  FROM ({source}) WHERE {where}
)
SELECT grouping(minute, second, bucket, user_id) AS g, service, minute, second, bucket, user_id,
       count(*) AS count, {levels}, count(*) FILTER (WHERE late) AS late,
       count(*) FILTER (WHERE level IN ({_ERRORS})) AS errors,
       count(response_time_ms) AS rt_count, coalesce(fsum(response_time_ms), 0.0) AS rt_sum,
       min(response_time_ms) AS rt_min, max(response_time_ms) AS rt_max
FROM a
GROUP BY GROUPING SETS ((service, minute), (service, minute, bucket), (service, minute, user_id), (service, second))
"""


# grouping() bit flags, in the order (minute, second, bucket, user_id): 1 = column not grouped.
_MINUTE, _SKETCH, _USERS, _SECONDS = 0b0111, 0b0101, 0b0110, 0b1011


def aggregate(con: duckdb.DuckDBPyConnection, source: str, params: list[object], window: Window) -> Aggregates:
    """Aggregate the rows of `source` (SQL of a relation with AGG_COLUMNS) inside `window`."""
    where, wparams = window.where()
    total_row = con.execute(f"SELECT count(*) FROM ({source})", params).fetchall()[0]
    total = int(total_row[0]) if total_row else 0
    if total == 0:
        return Aggregates(metrics.Partials.empty(), SECONDS_SCHEMA.empty_table(), 0, 0)
    out = con.sql(_sql(source, where), params=[*params, *wparams]).to_arrow_table()

    def part(flag: int) -> pa.Table:
        return out.filter(pc.equal(out["g"], flag))

    m = part(_MINUTE).sort_by([("service", "ascending"), ("minute", "ascending")])
    minute = pa.table({name: m[name] for name in metrics.MINUTE_SCHEMA.names}).cast(metrics.MINUTE_SCHEMA)
    sk = part(_SKETCH)
    sk = sk.filter(pc.is_valid(sk["bucket"]))
    sketch = pa.table({n: sk[n] for n in metrics.SKETCH_SCHEMA.names}).cast(metrics.SKETCH_SCHEMA)
    us = part(_USERS)
    us = us.filter(pc.is_valid(us["user_id"]))
    users = pa.table({n: us[n] for n in metrics.USERS_SCHEMA.names}).cast(metrics.USERS_SCHEMA)
    se = part(_SECONDS).sort_by([("service", "ascending"), ("second", "ascending")])
    seconds = pa.table({n: se[n] for n in SECONDS_SCHEMA.names}).cast(SECONDS_SCHEMA)
    kept = int(pc.sum(minute["count"]).as_py() or 0)
    return Aggregates(metrics.Partials(minute, sketch, users), seconds, kept, total - kept)


def merge_seconds(tables: list[pa.Table]) -> pa.Table:
    """Sum per-second counts of several partitions."""
    if not tables:
        return SECONDS_SCHEMA.empty_table()
    g = (
        pa.concat_tables(tables)
        .group_by(["service", "second"], use_threads=False)
        .aggregate([("count", "sum"), ("errors", "sum")])
    )
    return pa.table(
        {"service": g["service"], "second": g["second"], "count": g["count_sum"], "errors": g["errors_sum"]},
        schema=SECONDS_SCHEMA,
    ).sort_by([("service", "ascending"), ("second", "ascending")])
