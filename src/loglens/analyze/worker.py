"""What runs on a worker for one partition: decode → `LogSchema` → filter → `metrics.aggregate`.

This is the same validation and aggregation code as the live server; the result is a small,
picklable `PartitionResult` (Arrow partials + rejection counts and samples) that the driver
merges. Nothing here knows which engine called it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.analyze.inputs import Partition, read_blocks, read_store
from loglens.models import ERROR_LEVELS
from loglens.schema import LogSchema

SAMPLE_RAW_CHARS = 500
SECONDS_SCHEMA = pa.schema(
    [("service", pa.string()), ("second", pa.timestamp("us")), ("count", pa.int64()), ("errors", pa.int64())]
)

_SCHEMAS: dict[bytes, LogSchema] = {}  # per-process cache: compiling the schema once per worker, not per task

_GOT = re.compile(r" \(got .*\)$", re.S)
_INVALID_VALUE = re.compile(r"invalid value .*?; expected", re.S)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def reason_key(reason: str) -> str:
    """Group rejection reasons by kind: drop the offending value, keep field and rule."""
    if reason.startswith("malformed JSON"):
        return "malformed JSON"
    key = _GOT.sub("", reason)
    key = _INVALID_VALUE.sub("invalid value; expected", key)
    if key.startswith("timestamp:") and "in the future" in key:
        key = _NUMBER.sub("N", key)
    return key


@dataclass(frozen=True, slots=True)
class Filters:
    """Which accepted logs count: event time in [since, until) and one service (None = all)."""

    since_us: int | None = None
    until_us: int | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """Everything a worker needs; the schema travels as its document so workers need no config file."""

    partition: Partition
    schema_document: dict[str, Any]
    max_future_skew_s: float
    raw_limit: int
    now_us: int  # one clock for every partition: identical results whatever the engine
    filters: Filters = Filters()
    sample_limit: int = 5


@dataclass(slots=True)
class PartitionResult:
    """Aggregates and bad-line accounting of one partition."""

    index: int
    worker: str
    records: int = 0
    accepted: int = 0
    filtered_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    partials: metrics.Partials = field(default_factory=metrics.Partials.empty)
    seconds: pa.Table = field(default_factory=SECONDS_SCHEMA.empty_table)
    elapsed_s: float = 0.0


def worker_id() -> str:
    """Host and process of this worker (proves work ran in more than one place)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _schema(task: PartitionTask) -> LogSchema:
    key = orjson.dumps([task.schema_document, task.max_future_skew_s, task.raw_limit], option=orjson.OPT_SORT_KEYS)
    schema = _SCHEMAS.get(key)
    if schema is None:
        # Archives are old by nature: lateness is meaningless in a backtest, so nothing is flagged late.
        schema = LogSchema(
            task.schema_document,
            allowed_lateness_s=1e12,
            max_future_skew_s=task.max_future_skew_s,
            raw_limit=task.raw_limit,
        )
        _SCHEMAS[key] = schema
    return schema


def apply_filters(table: pa.Table, filters: Filters) -> pa.Table:
    """Keep rows inside the time range and service filter."""
    mask = None

    def both(m: Any, cond: Any) -> Any:
        return cond if m is None else pc.and_(m, cond)

    if filters.since_us is not None:
        mask = both(mask, pc.greater_equal(table["ts"], pa.scalar(filters.since_us, pa.timestamp("us"))))
    if filters.until_us is not None:
        mask = both(mask, pc.less(table["ts"], pa.scalar(filters.until_us, pa.timestamp("us"))))
    if filters.service is not None:
        mask = both(mask, pc.equal(table["service"], filters.service))
    return table if mask is None else table.filter(mask)


def per_second(table: pa.Table) -> pa.Table:
    """Logs and errors per (service, second): the resolution sliding-window rules need."""
    if table.num_rows == 0:
        return SECONDS_SCHEMA.empty_table()
    errors = pc.cast(pc.is_in(table["level"], pa.array(sorted(ERROR_LEVELS))), pa.int64())
    t = pa.table(
        {"service": table["service"], "second": pc.floor_temporal(table["ts"], unit="second"), "errors": errors}
    )
    g = t.group_by(["service", "second"], use_threads=False).aggregate([("errors", "count"), ("errors", "sum")])
    return pa.table(
        {"service": g["service"], "second": g["second"], "count": g["errors_count"], "errors": g["errors_sum"]},
        schema=SECONDS_SCHEMA,
    )


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


def run_partition(task: PartitionTask) -> PartitionResult:
    """Analyse one partition. Bad records are counted and sampled by reason; never raises on data."""
    started = time.perf_counter()
    part = task.partition
    result = PartitionResult(part.index, worker_id())
    tables: list[pa.Table] = []
    if part.kind == "store":
        table = read_store(part)  # validated when it was ingested
        result.records += table.num_rows
        tables.append(table)
    else:
        schema = _schema(task)
        rejected: Counter[str] = Counter()
        for block in read_blocks(part):
            batch = schema.validate(block.parsed, "analyze", task.now_us)
            result.records += len(block.parsed)
            tables.append(batch.table)
            for rej in batch.rejections:
                key = reason_key(rej.reason)
                rejected[key] += 1
                kept = result.samples.setdefault(key, [])
                if len(kept) < task.sample_limit:
                    kept.append((rej.reason, rej.raw[:SAMPLE_RAW_CHARS], str(block.location(rej.index))))
        result.rejected = dict(rejected)
    logs = pa.concat_tables(tables) if tables else pa.table({})
    accepted = sum(t.num_rows for t in tables)
    if accepted:
        kept_logs = apply_filters(logs, task.filters)
        result.accepted = kept_logs.num_rows
        result.filtered_out = accepted - kept_logs.num_rows
        result.partials = metrics.aggregate(kept_logs)
        result.seconds = per_second(kept_logs)
    result.elapsed_s = time.perf_counter() - started
    return result
