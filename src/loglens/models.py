"""Frozen types that cross stage boundaries, and the Arrow layout of a stored log batch.

Stages exchange these (or Arrow tables with `LOG_ARROW_SCHEMA`), never each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
class LogRecord:
    """One stored log, as returned by queries."""

    id: int
    ts: datetime
    received_at: datetime
    level: str
    service: str
    message: str
    user_id: str | None = None
    ip_address: str | None = None
    response_time_ms: float | None = None
    trace_id: str | None = None
    metadata: dict[str, Any] | None = None
    late: bool = False
    source: str = "http"


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One value of a per-minute time series."""

    service: str
    minute: datetime
    value: float | None


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
class Anomaly:
    """A detected anomaly, written per schemas/anomaly_schema.yaml."""

    id: str
    detected_at: datetime
    type: str
    severity: str
    service: str
    description: str
    score: float
    confidence: float
    observed: float | None
    expected: dict[str, float] | None  # {"low": .., "high": ..} or {"value": ..}
    window: dict[str, str]  # {"start": iso, "end": iso}
    related_log_ids: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier plugin receives: an alert transition (firing or resolved) for one channel."""

    id: str  # idempotency key: stable per (alert id, transition, channel)
    channel: str
    kind: str  # firing | resolved | test
    alert: Alert
    created_at: datetime
    duration_seconds: float | None = None  # for resolved: how long it fired
