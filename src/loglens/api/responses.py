"""Response models of every JSON route, so the OpenAPI document describes what the API returns.

Times are UTC ISO 8601 strings ending in `Z` (`models.iso`). Numbers that may be whole or
fractional are `Number` (`int | float`), so an integer count stays an integer on the wire.
Models accept fields they do not declare (`extra="allow"`): a newer server may add fields, and
documenting a response must never drop data from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = int | float


class Out(BaseModel):
    """Base of the response models."""

    model_config = ConfigDict(extra="allow")


# ---- health and ingest --------------------------------------------------------------------------
class HealthOut(Out):
    """Liveness/readiness of the server."""

    status: Literal["ok", "degraded"]
    version: str
    uptime_seconds: float
    queue_depth: int = Field(description="Logs submitted and not yet fsynced to the write-ahead log.")
    store_error: str | None = Field(
        description="The last WAL write failure (then 503) or loader failure (then 200, degraded)."
    )
    wal_lag_bytes: int = Field(description="WAL bytes acknowledged but not yet loaded into DuckDB.")
    replay_progress: float = Field(description="Share (0-1) of the start-up WAL backlog loaded.")


class IngestErrorItem(Out):
    """One rejected record of a request."""

    index: int
    reason: str


class IngestResponse(Out):
    """Result of an ingest request: counts and the first rejections."""

    accepted: int
    rejected: int
    errors: list[IngestErrorItem]
    duplicate: bool = False


# ---- queries ----------------------------------------------------------------------------------------
class Point(Out):
    """One minute of a series (`v` is null for latency in an empty minute)."""

    t: str
    v: Number | None


class Series(Out):
    """One service's points."""

    service: str
    points: list[Point]


class TimeseriesOut(Out):
    """Per-minute series of one metric."""

    metric: str
    minutes: int
    start: str
    end: str
    series: list[Series]
    next_offset: int | None = Field(None, description="With `limit`: offset of the next page (null: last).")


class Window(Out):
    """The time window of a summary."""

    start: str
    end: str
    minutes: int


class ServiceLatency(Out):
    """Average response time of a service."""

    service: str
    avg_ms: float | None
    samples: int


class UserRequests(Out):
    """Requests of one user."""

    user_id: str | None
    count: int


class TrendPoint(Out):
    """Error rate of one minute over all services."""

    t: str
    total: int
    errors: int
    error_rate: float


class ActiveService(Out):
    """A service ranked by volume."""

    service: str
    count: int
    errors: int
    error_rate: float


class SummaryOut(Out):
    """Aggregates over the last `minutes` minutes."""

    window: Window
    avg_response_time_ms: list[ServiceLatency]
    requests_per_user: list[UserRequests]
    distinct_users: int
    error_rate_trend: list[TrendPoint]
    most_active_services: list[ActiveService]


class ServiceOut(Out):
    """A service seen by the server."""

    service: str
    first_seen: str | None
    last_seen: str | None
    last_event_ts: str | None
    seconds_since_last_seen: float
    total: int
    errors: int
    volume_per_min: float
    error_rate: float
    avg_response_time_ms: float | None


class ServicesOut(Out):
    """Every service seen."""

    services: list[ServiceOut]
    total: int | None = Field(None, description="With `q` or `limit`: how many services match.")
    next_offset: int | None = Field(None, description="With `limit`: offset of the next page (null: last).")


class LogOut(Out):
    """One stored log."""

    id: int
    timestamp: str | None
    received_at: str | None
    level: str
    service: str
    message: str
    user_id: str | None = None
    ip_address: str | None = None
    response_time_ms: float | None = None
    trace_id: str | None = None
    metadata: dict[str, Any] | None = None
    late: bool = False
    source: str | None = None


class LogsOut(Out):
    """A page of logs, newest first."""

    logs: list[LogOut]
    next_cursor: str | None


class DeadLetterOut(Out):
    """One rejected record."""

    id: int
    received_at: str | None
    source: str | None
    reason: str
    raw: str | None
    replayed_at: str | None


class DeadLettersOut(Out):
    """A page of dead letters, newest first."""

    total: int
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None


# ---- alerting -----------------------------------------------------------------------------------
class AlertOut(Out):
    """An alert instance (dedup key: rule + service)."""

    id: str
    rule: str
    service: str
    severity: str
    state: Literal["pending", "firing", "resolved"]
    value: Number | None
    threshold: Number | None
    summary: str
    started_at: str | None
    fired_at: str | None
    resolved_at: str | None
    labels: dict[str, str]
    silenced: bool = False


class AlertsOut(Out):
    """Alerts, newest first."""

    alerts: list[AlertOut]
    next_offset: int | None = Field(None, description="Offset of the next page (null: this is the last).")


class AnomaliesOut(Out):
    """Anomalies, newest first; each document follows schemas/anomaly_schema.yaml."""

    anomalies: list[dict[str, Any]]
    next_offset: int | None = Field(None, description="Offset of the next page (null: this is the last).")


class SilenceOut(Out):
    """A silence: matchers and its validity."""

    id: str
    matchers: dict[str, str]
    starts_at: str | None
    expires_at: str | None
    comment: str
    created_by: str
    created_at: str | None


class SilencesOut(Out):
    """Silences that have not expired."""

    silences: list[SilenceOut]
    next_offset: int | None = Field(None, description="Offset of the next page (null: this is the last).")


class DeletedOut(Out):
    """The id of what was deleted."""

    deleted: str


class MiningOut(Out):
    """How template mining keeps up."""

    processed: int
    dropped: int
    lines_per_second: Number
    templates: int


class RuleOut(Out):
    """A built-in rule, its threshold and last evaluation."""

    name: str
    severity: str
    enabled: bool
    threshold: Number
    overrides: list[str]
    last_evaluated_at: str | None
    last_duration_ms: float | None
    mining: MiningOut | None = None


class SeriesCapOut(Out):
    """The cap on services tracked by detection (alerts.max_series) at work."""

    tracked: int
    max_series: int
    rejected_logs: int
    rejected_names: int
    expired: int
    evaluator_dropped_logs: int


class RulesOut(Out):
    """Every built-in rule."""

    rules: list[RuleOut]
    series: SeriesCapOut | None = None


# ---- dashboard ------------------------------------------------------------------------------------
class ServiceThresholds(Out):
    """Per-service overrides the dashboard colours tiles with."""

    absence_threshold_seconds: float | None
    error_rate_threshold: float | None


class DashboardConfigOut(Out):
    """The settings the dashboard page needs."""

    version: str
    features: dict[str, bool]
    absence_threshold_seconds: float
    absence_enabled: bool
    error_rate_threshold: float
    error_rate_min_events: int
    volume_threshold: Number
    volume_window_seconds: Number
    overrides: dict[str, ServiceThresholds]


# ---- notifications --------------------------------------------------------------------------------
class NotificationOut(Out):
    """One outbox row."""

    id: str
    channel: str
    kind: str
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    created_at: str | None
    next_attempt_at: str | None
    updated_at: str | None
    delivered_at: str | None
    duration_seconds: float | None = None
    alert: dict[str, Any]


class NotificationsOut(Out):
    """Outbox rows, newest first."""

    notifications: list[NotificationOut]


class RequeuedOut(Out):
    """A dead notification moved back to pending."""

    id: str
    state: Literal["pending"]


class NotifierOut(Out):
    """A configured channel with its routing and delivery health (never its settings)."""

    name: str
    type: str
    enabled: bool
    severities: list[str]
    rules: list[str] | None
    services: list[str] | None
    status: Literal["disabled", "failing", "ok", "idle"]
    consecutive_failures: int
    attempts: int
    failures: int
    last_error: str | None
    last_attempt_at: str | None
    last_success_at: str | None
    pending: int
    delivered: int
    dead: int


class NotifiersOut(Out):
    """Every configured channel."""

    notifiers: list[NotifierOut]


# ---- operations -----------------------------------------------------------------------------------
class ReloadOut(Out):
    """Outcome of one config reload."""

    ok: bool
    trigger: str
    issues: list[str]
    changed: list[str]
    restart_required: list[str]
    at: float


class StoreStatus(Out):
    """The store file."""

    path: str
    size_bytes: int
    rows: dict[str, int] = Field(default_factory=dict)
    queue_depth: int | None = None
    last_error: str | None = None


class RetentionStatus(Out):
    """Retention settings."""

    logs_days: float
    metrics_days: float
    interval_seconds: float


class RatesStatus(Out):
    """Ingest rates over the last minute."""

    window_seconds: int
    accepted_per_second: float
    rejected_per_second: float


class FiringAlert(Out):
    """A firing alert, as the status shows it."""

    rule: str
    service: str
    severity: str
    summary: str
    fired_at: str | None


class NotifierStatus(Out):
    """A channel, as the status shows it."""

    name: str
    type: str
    status: str
    pending: int
    delivered: int
    dead: int
    last_error: str | None


class StatusOut(Out):
    """What an operator checks first."""

    source: Literal["server", "store"]
    version: str
    config_path: str | None
    store: StoreStatus
    retention: RetentionStatus
    uptime_seconds: float | None
    started_at: str | None = None
    draining: bool = False
    rates: RatesStatus | None
    firing_alerts: list[FiringAlert]
    notifiers: list[NotifierStatus]
    last_reload: ReloadOut | None = None


class ConfigOut(Out):
    """The active config with secrets masked."""

    config_path: str | None
    config: dict[str, Any]


class ReplayError(Out):
    """A dead letter that is still invalid."""

    id: int
    reason: str


class ReplayOut(Out):
    """What one replay did."""

    matched: int
    replayed: int
    still_invalid: int
    skipped: int
    replayed_ids: list[int]
    errors: list[ReplayError]


# ---- protocols ------------------------------------------------------------------------------------
class EsVersion(Out):
    """The Elasticsearch version loglens answers as."""

    number: str
    build_flavor: str


class EsRootOut(Out):
    """The document Elasticsearch clients probe at `GET /`."""

    name: str
    cluster_name: str
    version: EsVersion
    tagline: str


class EsBulkOut(Out):
    """The `_bulk` answer: one item per action."""

    took: int
    errors: bool
    items: list[dict[str, Any]]


class EsErrorOut(Out):
    """An Elasticsearch-shaped error."""

    error: dict[str, Any]
    status: int
