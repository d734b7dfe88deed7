"""Types that cross stage boundaries, and the Arrow layouts of stored logs and their aggregates.

Stages exchange these (or Arrow tables with `LOG_ARROW_SCHEMA`), never each other's internals:
`Parsed` (decoders → schema), `Rejection` and `IngestResult` (schema/pipeline → API and
dead-letter), `Partials` and `CommitEvent` (store → evaluator, stream, self-metrics),
`Candidate` (rules → alert engine), `Alert` and `Notification` (alerting → notifiers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# Scalar fields of a log record (log_schema.yaml's properties besides `metadata`).
SCHEMA_FIELDS: tuple[str, ...] = (
    "timestamp",
    "level",
    "service",
    "message",
    "user_id",
    "ip_address",
    "response_time_ms",
    "trace_id",
)
ERROR_LEVELS: frozenset[str] = frozenset({"ERROR", "FATAL"})

# Columns of a validated log batch as it flows from `schema` into `store` and `metrics`.
# Times are UTC microseconds without a zone (DuckDB TIMESTAMP), to keep one clock everywhere.
LOG_ARROW_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us")),
        ("received_at", pa.timestamp("us")),
        ("level", pa.string()),
        ("service", pa.string()),
        ("message", pa.string()),
        ("user_id", pa.string()),
        ("ip_address", pa.string()),
        ("response_time_ms", pa.float64()),
        ("trace_id", pa.string()),
        ("metadata", pa.string()),  # JSON text
        ("late", pa.bool_()),
        ("source", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class LogRows:
    """Accepted logs as one list per LOG_ARROW_SCHEMA column, before they become Arrow.

    Building Arrow arrays has a fixed cost per call (about 10 µs per column here, so ~120 µs for
    a one-log table), which dominated a one-log request. Small requests are therefore validated
    into lists, and the WAL writer turns every request of a group commit into one table at once
    (`rows_to_table`), paying that fixed cost once per group instead of once per request.
    """

    columns: tuple[list[Any], ...]

    @property
    def num_rows(self) -> int:
        """Number of logs."""
        return len(self.columns[0])


# Up to this many rows a table is built by one struct conversion (see rows_to_table).
_STRUCT_ROWS = 64
_LOG_STRUCT = pa.struct(list(LOG_ARROW_SCHEMA))


def rows_to_table(parts: list[LogRows]) -> pa.Table:
    """One Arrow table (LOG_ARROW_SCHEMA) of every part's rows, in order."""
    if len(parts) == 1:
        columns = parts[0].columns
    else:
        columns = tuple([v for part in parts for v in part.columns[i]] for i in range(len(LOG_ARROW_SCHEMA)))
    if len(columns[0]) <= _STRUCT_ROWS:
        # One conversion call for the whole table instead of one per column: each call has a
        # fixed cost, which is most of the work for the few rows of a small group commit
        # (measured: one row 3x, twenty rows 1.5x faster; no gain from a few hundred rows on).
        return pa.Table.from_struct_array(pa.array(list(zip(*columns, strict=True)), type=_LOG_STRUCT))
    return pa.Table.from_arrays(
        [pa.array(col, f.type) for col, f in zip(columns, LOG_ARROW_SCHEMA, strict=True)], schema=LOG_ARROW_SCHEMA
    )


# Per-(service, minute) aggregates as `metrics.aggregate` computes them and the store upserts them.
MINUTE_SCHEMA = pa.schema(
    [
        ("service", pa.string()),
        ("minute", pa.timestamp("us")),
        ("count", pa.int64()),
        ("debug", pa.int64()),
        ("info", pa.int64()),
        ("warn", pa.int64()),
        ("error", pa.int64()),
        ("fatal", pa.int64()),
        ("late", pa.int64()),
        ("rt_count", pa.int64()),
        ("rt_sum", pa.float64()),
        ("rt_min", pa.float64()),
        ("rt_max", pa.float64()),
    ]
)
SKETCH_SCHEMA = pa.schema(
    [("service", pa.string()), ("minute", pa.timestamp("us")), ("bucket", pa.int32()), ("count", pa.int64())]
)
USERS_SCHEMA = pa.schema(
    [("service", pa.string()), ("minute", pa.timestamp("us")), ("user_id", pa.string()), ("count", pa.int64())]
)


def utcnow() -> datetime:
    """Timezone-aware current UTC time (one place to swap for an injectable clock)."""
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """UTC ISO 8601 with a trailing Z, the one time format of the API."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that failed decoding or validation, bound for the dead-letter store."""

    index: int
    reason: str
    raw: str
    source: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What an ingest request achieved; `errors` holds at most the configured number of rejections."""

    accepted: int
    rejected: int
    errors: list[Rejection] = field(default_factory=list)
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        """The documented response body of every ingest endpoint."""
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": [{"index": e.index, "reason": e.reason} for e in self.errors],
        }
        if self.duplicate:
            out["duplicate"] = True
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert instance: one (rule, service) dedup key moving pending → firing → resolved."""

    id: str
    rule: str  # error_rate | absence | volume | anomaly | new_pattern | meta | user-defined
    service: str
    severity: str  # critical | warning | info
    state: str  # pending | firing | resolved
    value: float | None
    threshold: float | None
    summary: str
    started_at: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        """Alerts with the same key are the same alert."""
        return f"{self.rule}:{self.service}"

    def to_json(self) -> dict[str, Any]:
        """The alert as the API, the live stream and notifiers document it."""
        return {
            "id": self.id,
            "rule": self.rule,
            "service": self.service,
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "summary": self.summary,
            "started_at": iso(self.started_at),
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "labels": dict(self.labels),
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier plugin receives: an alert transition (firing or resolved) for one channel."""

    id: str  # idempotency key: stable per (alert id, transition, channel)
    channel: str
    kind: str  # firing | resolved | test
    alert: Alert
    created_at: datetime
    duration_seconds: float | None = None  # for resolved: how long it fired


class Parsed:
    """Decoded records of one request: values, decode failures and lazy access to raw text.

    A clean NDJSON body may stay undecoded (`ndjson` set, `values` decoded on first access):
    `LogSchema.validate` then parses it straight into Arrow columns in C++ and builds Python
    objects only for the rows that need an exact rejection reason.
    """

    __slots__ = ("_failures", "_lines", "_loader", "_values", "count", "ndjson", "raw")

    def __init__(
        self,
        values: list[Any] | None,
        failures: dict[int, str] | None,
        raw: Callable[[int], str],
        *,
        ndjson: bytes | None = None,
        count: int | None = None,
        loader: Callable[[], tuple[list[Any], dict[int, str]]] | None = None,
    ) -> None:
        self._values = values
        self._failures = failures
        self.raw = raw
        self.ndjson = ndjson
        self.count = len(values) if values is not None else count or 0
        self._loader = loader
        self._lines: list[bytes] | None = None

    def _materialize(self) -> None:
        assert self._loader is not None
        self._values, self._failures = self._loader()
        self.count = len(self._values)

    @property
    def values(self) -> list[Any]:
        """The decoded JSON values, one per record."""
        if self._values is None:
            self._materialize()
        assert self._values is not None
        return self._values

    @property
    def failures(self) -> dict[int, str]:
        """Index → reason for records that could not be decoded."""
        if self._values is None:
            self._materialize()
        assert self._failures is not None
        return self._failures

    def value_at(self, i: int) -> tuple[Any, str | None]:
        """Record i and its decode failure (None if it decoded); decodes just that line when lazy."""
        if self._values is not None:
            return self._values[i], (self._failures.get(i) if self._failures else None)
        if self._lines is None:
            assert self.ndjson is not None
            self._lines = self.ndjson.split(b"\n")
        try:  # the line's own bytes: invalid UTF-8 must be rejected, not repaired
            return orjson.loads(self._lines[i]), None
        except orjson.JSONDecodeError as exc:
            return None, malformed_json(self._lines[i], exc)

    @property
    def is_lazy(self) -> bool:
        """True while the NDJSON body has not been decoded into Python objects."""
        return self._values is None

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True, slots=True)
class Partials:
    """Aggregates of some logs: per-minute counters, latency sketch buckets, per-user counts."""

    minute: pa.Table
    sketch: pa.Table
    users: pa.Table

    @staticmethod
    def empty() -> Partials:
        """Aggregates of no logs."""
        return Partials(MINUTE_SCHEMA.empty_table(), SKETCH_SCHEMA.empty_table(), USERS_SCHEMA.empty_table())


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """Published to listeners after group commits: the stored logs (with ids) and aggregates.

    Under load one event carries several group commits (the dispatcher coalesces them);
    `commit_seconds` holds the duration of each (encode, append, fsync), in commit order.
    """

    logs: pa.Table
    partials: Partials
    dead_letters: int
    committed_at_us: int
    commit_seconds: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """The outcome of one rule for one service: breaching or not, with the value judged."""

    rule: str
    service: str
    breach: bool
    value: float | None
    threshold: float | None
    severity: str
    summary: str
    for_seconds: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


def malformed_json(raw: bytes, exc: Exception) -> str:
    """The reason a record's bytes are not JSON, saying what is wrong when it is the encoding."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"malformed JSON: not valid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {bad.start}); "
            "send UTF-8 text, e.g. é is c3 a9, not Latin-1 e9"
        )
    return f"malformed JSON: {exc}"


AnomalyDoc = dict[str, Any]  # valid against schemas/anomaly_schema.yaml (checked before it is stored)


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert state to store, with whether its firing was handed to the notifiers."""

    alert: Alert
    notified: bool
    updated_at: float


@dataclass(frozen=True, slots=True)
class SilenceRow:
    """A stored silence (epoch seconds)."""

    id: str
    matchers: dict[str, str]
    starts_at: float
    expires_at: float
    comment: str
    created_by: str
    created_at: float
