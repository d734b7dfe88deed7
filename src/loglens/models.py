"""Frozen types that cross stage boundaries, and the Arrow layout of a stored log batch.

Stages exchange these (or Arrow tables with `LOG_ARROW_SCHEMA`), never each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
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
