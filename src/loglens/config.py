"""Configuration: pydantic models, YAML loading with file:line errors, `${ENV}` interpolation.

`load_settings(path)` is the only entry point. Every problem is reported as
`config.yaml:LINE: key.path: message (did you mean 'x'?)` through `ConfigError`, never a traceback.
Relative paths in the file are resolved against the directory of the config file, so a
config works the same whatever directory loglens is started from.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from loglens.errors import ConfigError, ConfigIssue

Severity = Literal["critical", "warning", "info"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _token(value: object) -> object:
    """A token must be a non-empty string; its value is never repeated in the error."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError('must be a string (quote it in YAML, e.g. "0123")')
    if not value.strip():
        raise ValueError("is empty: an empty token would turn authentication off; remove the key to run without one")
    return value


Token = Annotated[SecretStr, BeforeValidator(_token)]
"""A secret token: masked in dumps and `repr`, never echoed in validation errors."""


def secret_value(value: SecretStr | str | None) -> str | None:
    """The plain text of a secret field (settings built with `model_copy` may hold a plain str)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


class ServerConfig(_Model):
    """HTTP server settings."""

    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps loglens local.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the API and dashboard.")
    api_token: Token | None = Field(
        None,
        description="Token for reading and ingesting (scopes `read` + `ingest`): when any token is set, every "
        "API request needs `Authorization: Bearer <token>` with a token of the right scope.",
    )
    ingest_token: Token | None = Field(None, description="Token for log shippers: may only send logs (scope `ingest`).")
    read_token: Token | None = Field(
        None, description="Token for dashboards and scripts: may only read (scope `read`)."
    )
    admin_token: Token | None = Field(
        None,
        description="Token for everything, including the admin scope: silences, reload, dead-letter replay, "
        "notification retry. Once any token is set, admin endpoints need this one.",
    )
    session_max_age_hours: float = Field(
        12, gt=0, description="How long a dashboard login (HttpOnly, SameSite=Strict cookie) stays valid."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (e.g. `https://ops.example.com`) allowed to call the API cross-origin (CORS) "
        "and to write cross-site; every other site's writes are refused (403). Empty: none.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names clients may use to reach loglens, besides loopback names, IP addresses and (when "
        "bound to all interfaces) this machine's names; `.example.com` allows subdomains, `*` turns the check off "
        "(only behind a proxy that checks Host). Refusing unknown names defeats DNS rebinding.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections at most; at the limit the longest-idle connection is closed for a new one "
        "(or the new one is refused when none is idle), so idle sockets cannot exhaust file descriptors.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A client must send a complete request head within this time of connecting (or of starting "
        "a request on a kept-alive connection), else 408 and the connection closes.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (request line + headers); larger → 431."
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest pause while a request body is being received; a stalled upload is closed (408).",
    )
    keep_alive_seconds: int = Field(
        5, ge=1, description="An idle kept-alive connection is closed after this many seconds."
    )
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Request-body bytes all clients together may have in flight; a request that does not fit "
        "is answered 503 with Retry-After, so many slow large uploads cannot exhaust memory. At least "
        "`ingest.max_body_bytes`.",
    )
    watch_config: bool = Field(
        False,
        description="Reload the config file automatically when it changes on disk (SIGHUP and "
        "POST /api/v1/admin/reload always work).",
    )
    watch_interval_seconds: float = Field(2.0, gt=0, description="How often the watched config file is checked.")
    shutdown_timeout_seconds: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM, how long to drain the ingest queue and the notification outbox "
        "(new ingest gets 503 with Retry-After meanwhile) before exiting.",
    )


class StorageConfig(_Model):
    """DuckDB store settings."""

    path: Path = Field(Path("data/loglens.duckdb"), description="DuckDB database file.")
    retention_days: float = Field(7, gt=0, description="Raw logs older than this are deleted.")
    metrics_retention_days: float = Field(90, gt=0, description="Per-minute metrics kept this long.")
    retention_interval_seconds: float = Field(60, gt=0, description="How often retention runs.")
    memory_limit: str = Field(
        "128MB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="Cap on DuckDB's buffer memory (it caches up to 80 % of RAM by default); keeps the "
        "server's memory bounded. DuckDB keeps every block it writes cached until this cap, so the server's "
        "memory rises with the database until it is reached; the OS page cache holds the file as well.",
    )
    wal_dir: Path | None = Field(
        None, description="Write-ahead log directory (default: next to the database, `<path>.wal.d`)."
    )
    wal_max_bytes: int = Field(
        1 << 30,
        gt=0,
        description="WAL bytes acknowledged but not yet loaded into DuckDB before ingest answers 429 "
        "(Retry-After from the loader's drain rate).",
    )
    wal_segment_bytes: int = Field(64 << 20, ge=1 << 16, description="Size at which a WAL segment file is closed.")
    load_interval_ms: int = Field(
        200,
        ge=1,
        le=1000,
        description="Longest time an acknowledged log waits before the loader moves it to DuckDB; under a "
        "stream heavy enough to fill load_batch_logs within a second, up to a second, so each load writes "
        "whole DuckDB row groups (reads never wait for it: they load what they need first).",
    )
    load_batch_logs: int = Field(
        245_760,
        gt=0,
        description="Most logs the loader moves in one DuckDB transaction: two DuckDB row groups of 122,880 "
        "(loads of less than about 1.5 row groups cost DuckDB up to twice the CPU per log).",
    )


class ArchiveConfig(_Model):
    """Hourly Parquet archive of the live store, written by `serve` (and `loglens export`)."""

    enabled: bool = Field(False, description="Archive closed hours automatically while serving.")
    directory: Path = Field(
        Path("data/archive"),
        description="Archive root: date=YYYY-MM-DD/hour=HH/service=NAME/*.parquet (zstd) plus manifest.json.",
    )
    delay_seconds: float = Field(
        900,
        ge=0,
        description="An hour is archived this long after it ends, so late logs (ingest.allowed_lateness_seconds) "
        "land first; an hour that still gains logs later is rewritten atomically.",
    )
    live_retention_hours: float | None = Field(
        None,
        gt=0,
        description="Once archived, raw logs stay in the live store this many hours (never longer than "
        "storage.retention_days); unset = storage.retention_days alone decides.",
    )
    interval_seconds: float = Field(60, gt=0, description="How often the archiver looks for closed hours.")


class SchemasConfig(_Model):
    """Paths of the JSON Schemas enforced at run time."""

    log: Path = Field(
        Path("schemas/log_schema.yaml"),
        description="Log record schema, relative to the config file. Left at this default and absent "
        "(loglens run outside its checkout), the copy shipped in the package is used.",
    )
    anomaly: Path = Field(
        Path("schemas/anomaly_schema.yaml"),
        description="Anomaly record schema; the same default rule as schemas.log.",
    )


class IngestConfig(_Model):
    """Limits and timing of the ingest path."""

    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest request body (after gzip).")
    max_queue_logs: int = Field(500_000, gt=0, description="Logs waiting for their WAL fsync before 429.")
    commit_interval_ms: int = Field(20, ge=1, le=50, description="Group-commit window.")
    idempotency_keys_max: int = Field(
        250_000,
        gt=0,
        description="Idempotency-Key values remembered (the newest; each also at most storage.retention_days): "
        "a retry with an older key is stored again. Bounds the server's memory when every request has a new key.",
    )
    max_batch_logs: int = Field(100_000, gt=0, description="Largest group commit in logs.")
    dead_letter_raw_limit: int = Field(4096, gt=0, description="Raw text kept per rejected log.")
    max_errors_reported: int = Field(100, ge=0, description="Errors listed per ingest response.")
    allowed_lateness_seconds: float = Field(120, ge=0, description="Older logs are stored but flagged late.")
    max_future_skew_seconds: float = Field(300, ge=0, description="Logs further in the future are rejected.")
    files: list[Path] = Field(
        default_factory=list, description="NDJSON files the server follows (tail), surviving rotation."
    )


class ErrorRateRule(_Model):
    """error+fatal / total over a sliding window (default: above 10 % in any 1-minute window)."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    threshold: float = Field(0.10, ge=0, le=1, description="Fires when the ratio is strictly above this.")
    window_seconds: int = Field(60, gt=0, description="Length of the sliding window (event time).")
    min_events: int = Field(
        10,
        ge=1,
        description="No alert on windows with fewer logs than this (noise guard: 1 error out of 1 log pages "
        "nobody). The default lets 5 errors out of 10 logs in a minute fire.",
    )
    for_seconds: float = Field(0, ge=0, description="Breach must last this long before firing.")
    severity: Severity = Field("critical", description="Severity of the alert it raises.")


class AbsenceRule(_Model):
    """A known service sends nothing for longer than `threshold_seconds` (arrival time)."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    threshold_seconds: float = Field(
        120, gt=0, description="Fires when a known service has sent nothing for longer than this (arrival time)."
    )
    severity: Severity = Field("critical", description="Severity of the alert it raises.")


class VolumeRule(_Model):
    """More than `threshold` logs in a sliding window for one service."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    threshold: int = Field(100, ge=0, description="Fires when the count is strictly above this.")
    window_seconds: int = Field(60, gt=0, description="Length of the sliding window (event time).")
    for_seconds: float = Field(0, ge=0, description="Breach must last this long before firing.")
    severity: Severity = Field("warning", description="Severity of the alert it raises.")


class AnomalyRule(_Model):
    """Robust-baseline anomaly detection on volume, error rate and p95 latency."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    k: float = Field(3.0, gt=0, description="Band width in robust standard deviations.")
    warmup_minutes: int = Field(10, ge=1, description="Minutes of history before judging.")
    min_baseline_volume: float = Field(20, ge=0, description="Quieter services are not judged on volume.")
    exit_k: float = Field(2.0, gt=0, description="Hysteresis: the anomaly ends below this band.")
    window_seconds: int = Field(
        60, ge=5, le=60, description="Sliding window judged against the per-minute baseline (scaled to a minute)."
    )
    severity: Severity = Field("warning", description="Severity of its alerts and anomalies.")


class NewPatternRule(_Model):
    """New log templates at ERROR or above, and template rate jumps."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    min_level: Literal["DEBUG", "INFO", "WARN", "ERROR", "FATAL"] = Field(
        "ERROR", description="Only templates of logs at this level or above can be new patterns."
    )
    rate_jump_factor: float = Field(10.0, gt=1, description="Rate above baseline × this is anomalous.")
    warmup_seconds: float = Field(
        300, ge=0, description="Templates first seen while the miner is younger than this are learned silently."
    )
    resolve_after_seconds: float = Field(
        300, gt=0, description="A new_pattern alert resolves after this long without new findings."
    )
    severity: Severity = Field("warning", description="Severity of its alerts and anomalies.")


class RulesConfig(_Model):
    """The built-in alert rules with their thresholds."""

    error_rate: ErrorRateRule = ErrorRateRule()
    absence: AbsenceRule = AbsenceRule()
    volume: VolumeRule = VolumeRule()
    anomaly: AnomalyRule = AnomalyRule()
    new_pattern: NewPatternRule = NewPatternRule()


class ServiceOverride(_Model):
    """Per-service rule overrides; any omitted rule keeps the global settings."""

    error_rate: ErrorRateRule | None = None
    absence: AbsenceRule | None = None
    volume: VolumeRule | None = None
    anomaly: AnomalyRule | None = None


class AlertsConfig(_Model):
    """Alert evaluation and lifecycle."""

    evaluation_interval_seconds: float = Field(1.0, gt=0, description="Timer evaluation period.")
    group_wait_seconds: float = Field(
        0.0,
        ge=0,
        description="Transitions of one rule reaching a channel within this window go out as one grouped "
        "notification (those of one evaluation always do).",
    )
    resolve_after_seconds: float = Field(
        0.0,
        ge=0,
        description="A firing alert resolves only after its condition has been clear this long (no flapping "
        "when a value hovers at the threshold).",
    )
    max_series: int = Field(
        10_000,
        ge=1,
        description="Most services tracked by detection (like Prometheus's sample limit or Loki's max streams). "
        "Logs of further new service names are stored as usual but left out of alerting, counted, and a "
        "`series_limit` meta-alert fires once.",
    )
    series_idle_seconds: float = Field(
        86_400,
        ge=0,
        description="A service that sent nothing for this long is forgotten by detection and its alerts resolve "
        "(0 = never).",
    )
    max_queue_logs: int = Field(
        500_000,
        ge=1000,
        description="Committed logs waiting for the evaluator; beyond it batches are counted "
        "and left out of alerting, and an `evaluator` meta-alert fires.",
    )
    max_queue_rows: int = Field(
        200_000,
        ge=1000,
        description="Alert and anomaly rows waiting to be written; beyond it the oldest are "
        "dropped (alerting goes on in memory) and an `alert-store` meta-alert fires.",
    )
    rules: RulesConfig = RulesConfig()
    overrides: dict[str, ServiceOverride] = Field(default_factory=dict, description="Keyed by service.")


class NotifierConfig(_Model):
    """One notification channel: a plugin `type` plus its own `settings` and routing."""

    name: str = Field(description="Channel name used in routing, logs and `loglens notify test`.")
    type: str = Field(description="Plugin name (entry point in group loglens.notifiers).")
    enabled: bool = Field(True, description="Send to this channel.")
    severities: list[Severity] = Field(
        default_factory=lambda: list[Severity](["critical", "warning"]), description="Only alerts of these severities."
    )
    rules: list[str] | None = Field(None, description="Only these rules (None = all).")
    services: list[str] | None = Field(None, description="Only these services (None = all).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Validated by the plugin's model.")


class OutboxConfig(_Model):
    """Durable notification delivery."""

    max_attempts: int = Field(8, ge=1, description="Tries per notification before it is marked dead.")
    initial_backoff_seconds: float = Field(
        0.5, gt=0, description="Wait before the first retry; doubles each time, with jitter."
    )
    max_backoff_seconds: float = Field(60, gt=0, description="Longest wait between two tries.")
    timeout_seconds: float = Field(
        5,
        gt=0,
        description="Per-attempt timeout. A channel's own `timeout_seconds` may be shorter (it is then the bound); "
        "a longer one is a check-config error.",
    )
    max_queue: int = Field(
        100_000,
        ge=100,
        description="Alert transitions waiting to be grouped and written; beyond it they are counted and dropped, "
        "and a `notifier:queue` meta-alert fires (meta-alerts always pass).",
    )


class LoggingConfig(_Model):
    """loglens's own logs (JSON lines)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of loglens's own JSON-lines logs on stderr; changes on reload."
    )


def _fields(**overrides: list[str]) -> Callable[[], FieldMapping]:
    """A default_factory for a FieldMapping with per-protocol input field names."""
    return lambda: FieldMapping.model_validate(overrides)


class FieldMapping(_Model):
    """Which input field becomes which schema field: the first candidate present wins.

    Candidates are key names; a dotted name (`service.name`) matches a flat key of that name
    first, then the nested path. For OTLP and syslog the candidates name attributes /
    structured-data params (their core fields come from the protocol itself).
    """

    timestamp: list[str] = Field(
        default_factory=lambda: ["timestamp", "@timestamp", "time", "ts"],
        description="Input keys read as `timestamp`, first present wins.",
    )
    level: list[str] = Field(
        default_factory=lambda: ["level", "log.level", "severity", "levelname"],
        description="Input keys read as `level`, first present wins.",
    )
    service: list[str] = Field(
        default_factory=lambda: ["service", "service.name", "app", "logger"],
        description="Input keys read as `service`, first present wins.",
    )
    message: list[str] = Field(
        default_factory=lambda: ["message", "msg", "log"],
        description="Input keys read as `message`, first present wins.",
    )
    user_id: list[str] = Field(
        default_factory=lambda: ["user_id", "user.id", "enduser.id"],
        description="Input keys read as `user_id`, first present wins.",
    )
    ip_address: list[str] = Field(
        default_factory=lambda: ["ip_address", "client.ip", "client.address", "source.ip"],
        description="Input keys read as `ip_address`, first present wins.",
    )
    response_time_ms: list[str] = Field(
        default_factory=lambda: ["response_time_ms", "http.response_time_ms", "duration_ms"],
        description="Input keys read as `response_time_ms`, first present wins.",
    )
    trace_id: list[str] = Field(
        default_factory=lambda: ["trace_id", "trace.id", "traceId"],
        description="Input keys read as `trace_id`, first present wins.",
    )
    default_level: str | None = Field("INFO", description="Level used when no level field is present.")
    default_service: str | None = Field(None, description="Service used when no service field is present.")


class MappingsConfig(_Model):
    """Field mapping per protocol, with sensible defaults for what each kind of client sends."""

    otlp: FieldMapping = Field(
        default_factory=_fields(
            user_id=["user.id", "enduser.id", "user_id"],
            ip_address=["client.address", "http.client_ip", "net.peer.ip", "source.address"],
            response_time_ms=["http.response_time_ms", "response_time_ms", "duration_ms"],
            trace_id=[],
        )
    )
    syslog: FieldMapping = Field(
        default_factory=_fields(
            user_id=["user_id", "user.id", "uid"],
            ip_address=["ip_address", "ip", "client.ip"],
            response_time_ms=["response_time_ms", "duration_ms"],
            trace_id=["trace_id", "traceId"],
        )
    )
    tail: FieldMapping = Field(default_factory=_fields())
    loki: FieldMapping = Field(
        default_factory=_fields(
            service=["service", "service_name", "service.name", "job", "app", "application"],
            level=["level", "detected_level", "severity", "log.level", "lvl"],
        )
    )
    # The forward protocol's event time is the timestamp (no record key by default) and the tag
    # is the service when the record names none (Fluent Bit's kubernetes filter adds the two
    # `kubernetes.*` keys; its tags are file paths, often too long for a service name).
    fluent: FieldMapping = Field(
        default_factory=_fields(
            timestamp=[],
            message=["message", "log", "msg"],
            service=[
                "service",
                "service.name",
                "app",
                "application",
                "kubernetes.labels.app",
                "kubernetes.container_name",
            ],
        )
    )
    es_bulk: FieldMapping = Field(
        default_factory=_fields(
            timestamp=["@timestamp", "timestamp", "time"],
            level=["log.level", "level", "severity"],
            service=["service.name", "service", "app", "fields.service"],
            message=["message", "msg", "event.original"],
            user_id=["user.id", "user_id", "user.name"],
            ip_address=["client.ip", "source.ip", "ip_address", "host.ip"],
            response_time_ms=["response_time_ms", "http.response_time_ms", "duration_ms"],
            trace_id=["trace.id", "trace_id"],
        )
    )


class SyslogConfig(_Model):
    """Syslog receiver (RFC 5424 and RFC 3164) over UDP and TCP; off by default."""

    enabled: bool = Field(False, description="Start the syslog receiver with the server.")
    host: str = Field("127.0.0.1", description="Interface to bind.")
    udp_port: int | None = Field(5514, ge=0, le=65535, description="UDP port (None = no UDP).")
    tcp_port: int | None = Field(5514, ge=0, le=65535, description="TCP port (None = no TCP).")
    max_message_bytes: int = Field(64 * 1024, gt=0, description="Longer messages go to dead-letter.")
    flush_interval_ms: int = Field(20, ge=1, description="Batch flush window into the pipeline.")
    flush_records: int = Field(1000, ge=1, description="Flush a batch at this many records.")
    max_pending: int = Field(50_000, ge=1, description="Buffered records before TCP reads pause / UDP drops.")


class FluentConfig(_Model):
    """Fluent forward input (Fluent Bit / Fluentd `forward` output, Docker's `fluentd` log driver); off by default."""

    enabled: bool = Field(False, description="Start the Fluent forward listener with the server.")
    host: str = Field("127.0.0.1", description="Interface to bind (0.0.0.0 to accept other hosts).")
    port: int = Field(24224, ge=0, le=65535, description="TCP port (24224 is Fluentd's; 0 picks a free one).")
    shared_key: str | None = Field(
        None, description="When set, clients must pass the forward protocol's HELO/PING/PONG handshake with it."
    )
    self_hostname: str = Field("loglens", description="Hostname this server gives in the handshake's PONG.")
    max_chunk_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest forward message (and decompressed chunk); larger ones are refused."
    )


class TailConfig(_Model):
    """How `ingest.files` and `loglens tail` follow files."""

    checkpoint_path: Path | None = Field(
        None, description="Offsets file (default: tail-checkpoints.json next to the store)."
    )
    poll_interval_ms: int = Field(200, ge=1, description="How often files are checked for new lines.")
    batch_lines: int = Field(5000, ge=1, description="Lines per commit.")
    max_line_bytes: int = Field(1024 * 1024, gt=0, description="Longer lines go to dead-letter.")


class ProtocolsConfig(_Model):
    """Extra ingest protocols: syslog, Fluent forward, file tail, and the field mapping of every protocol."""

    syslog: SyslogConfig = SyslogConfig()
    fluent: FluentConfig = FluentConfig()
    tail: TailConfig = TailConfig()
    mapping: MappingsConfig = MappingsConfig()


class Settings(_Model):
    """The whole of config.yaml."""

    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    schemas: SchemasConfig = SchemasConfig()
    ingest: IngestConfig = IngestConfig()
    protocols: ProtocolsConfig = ProtocolsConfig()
    alerts: AlertsConfig = AlertsConfig()
    notifiers: list[NotifierConfig] = Field(default_factory=lambda: [NotifierConfig(name="console", type="console")])
    outbox: OutboxConfig = OutboxConfig()
    logging: LoggingConfig = LoggingConfig()
    archive: ArchiveConfig = ArchiveConfig()
    config_path: Path | None = Field(None, exclude=True, description="Where this config was read from.")
    cli_overrides: tuple[str, ...] = Field(
        (), exclude=True, description="Keys (`server.port`) set by command-line flags, which a reload keeps."
    )

    @model_validator(mode="after")
    def _budget_fits_one_body(self) -> Settings:
        if self.server.max_inflight_body_bytes < self.ingest.max_body_bytes:
            raise ValueError(
                f"server.max_inflight_body_bytes ({self.server.max_inflight_body_bytes}) must be at least "
                f"ingest.max_body_bytes ({self.ingest.max_body_bytes})"
            )
        return self

    @field_validator("notifiers")
    @classmethod
    def _unique_names(cls, value: list[NotifierConfig]) -> list[NotifierConfig]:
        names = [n.name for n in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate notifier name(s): {', '.join(dupes)}")
        return value


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, file: str, issues: list[ConfigIssue], path: tuple[Any, ...] = ()) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in string scalars, keeping ruamel's line info."""
    if isinstance(node, CommentedMap):
        for key in list(node.keys()):
            node[key] = _interpolate(node[key], file, issues, (*path, key))
        return node
    if isinstance(node, CommentedSeq):
        for i in range(len(node)):
            node[i] = _interpolate(node[i], file, issues, (*path, i))
        return node
    if isinstance(node, str) and "${" in node:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if value == "" and is_secret_path(path):
                issues.append(
                    ConfigIssue(
                        file,
                        None,
                        _dotted(path),
                        f"environment variable {name} is set but empty: an empty token would turn authentication "
                        "off (unset the variable to run without a token)",
                    )
                )
                return ""
            if value is None or (value == "" and default is not None):
                if default is None:
                    issues.append(ConfigIssue(file, None, _dotted(path), f"environment variable {name} is not set"))
                    return ""
                return default
            return value

        result = _ENV_RE.sub(repl, node)
        return None if result == "" and _ENV_RE.fullmatch(node) else result
    return node


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(root: Any, path: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node of `path` that exists in the YAML tree."""
    node, line = root, None
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    if line is None and isinstance(root, CommentedMap | CommentedSeq):
        line = root.lc.line + 1
    return line


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of `path`, to suggest close key names."""
    model: Any = Settings
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for cand in candidates:
            inner = getattr(cand, "__args__", None)
            for c in [cand, *(inner or ())]:
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
            else:
                continue
            break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _issues_from_validation(exc: ValidationError, root: Any, file: str) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc)
            message = "unknown key"
            if owner is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1, cutoff=0.5)
                if close:
                    message += f" (did you mean '{close[0]}'?)"
                else:
                    message += f" (allowed: {', '.join(k for k, f in owner.model_fields.items() if not f.exclude)})"
        elif "input" in err and err["type"] not in ("missing",) and not is_secret_path(loc):
            message += f" (got {err['input']!r})"
        issues.append(ConfigIssue(file, _line_of(root, loc), _dotted(loc), message))
    return issues


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in (("storage", "path"), ("schemas", "log"), ("schemas", "anomaly"), ("archive", "directory")):
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            p = Path(sec[key])
            sec[key] = str(p if p.is_absolute() else base / p)
    ingest = data.get("ingest")
    if isinstance(ingest, dict) and isinstance(ingest.get("files"), list):
        ingest["files"] = [
            str(base / f) if isinstance(f, str) and not Path(f).is_absolute() else f for f in ingest["files"]
        ]
    tail = (data.get("protocols") or {}).get("tail") if isinstance(data.get("protocols"), dict) else None
    if isinstance(tail, dict) and isinstance(tail.get("checkpoint_path"), str):
        p = Path(tail["checkpoint_path"])
        tail["checkpoint_path"] = str(p if p.is_absolute() else base / p)


def parse_settings(text: str, file: str = "config.yaml", base_dir: Path | None = None) -> Settings:
    """Parse config text into Settings; raise ConfigError listing every problem with its line."""
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigIssue(file, line, "", f"invalid YAML: {exc.problem or exc.context} (check indentation and quoting)")]
        ) from None
    except Exception as exc:  # ruamel raises a few non-marked errors (e.g. duplicate keys)
        raise ConfigError([ConfigIssue(file, None, "", f"invalid YAML: {exc}")]) from None
    if root is None:
        root = CommentedMap()
    if not isinstance(root, CommentedMap):
        raise ConfigError(
            [ConfigIssue(file, 1, "", "the top level must be a mapping of sections (server:, storage:, ...)")]
        )
    issues: list[ConfigIssue] = []
    root = _interpolate(root, file, issues)
    if issues:
        raise ConfigError(issues)
    data = _to_plain(root)
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues_from_validation(exc, root, file)) from None
    return settings if base_dir is None else _anchor_defaults(settings, base_dir)


def _anchor_defaults(settings: Settings, base: Path) -> Settings:
    """Relative paths left at their defaults resolve against the config file's directory too."""

    def anchored(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    chosen = set(settings.schemas.model_fields_set)  # before model_copy marks every field as set
    schemas = settings.schemas.model_copy(
        update={"log": anchored(settings.schemas.log), "anomaly": anchored(settings.schemas.anomaly)}
    )
    storage = settings.storage.model_copy(update={"path": anchored(settings.storage.path)})
    return _bundled_schema_defaults(settings.model_copy(update={"schemas": schemas, "storage": storage}), chosen)


BUNDLED_SCHEMA_DIR = Path(__file__).resolve().parent / "schema" / "defaults"


def _bundled_schema_defaults(settings: Settings, chosen: set[str]) -> Settings:
    """A schema left at its default path that is not there (loglens run outside a checkout, with
    no `schemas/` beside the config) is the copy shipped inside the package. A path the config
    sets explicitly (`chosen`) is never replaced: a missing file there stays an error naming it."""
    update = {
        name: BUNDLED_SCHEMA_DIR / default.name
        for name, default in (("log", settings.schemas.log), ("anomaly", settings.schemas.anomaly))
        if name not in chosen and not default.exists()
    }
    if not update:
        return settings
    return settings.model_copy(update={"schemas": settings.schemas.model_copy(update=update)})


def _to_plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node


def load_settings(path: str | Path | None = None) -> Settings:
    """Load config.yaml (default: ./config.yaml, or built-in defaults when it does not exist)."""
    if path is None:
        default = Path("config.yaml")
        if not default.exists():
            return _bundled_schema_defaults(Settings(), set())
        path = default
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(str(path), None, "", "file not found (pass --config PATH or create config.yaml)")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read file: {exc}")]) from None
    settings = parse_settings(text, file=str(path), base_dir=path.resolve().parent)
    return settings.model_copy(update={"config_path": path.resolve()})


def is_secret_annotation(annotation: Any) -> bool:
    """Whether a field's type is (or contains) `SecretStr`."""
    return annotation is SecretStr or any(is_secret_annotation(a) for a in get_args(annotation))


def is_secret_path(path: tuple[Any, ...]) -> bool:
    """Whether the dotted config location `path` is a field declared secret (a SecretStr) in the models."""
    keys = tuple(p for p in path if not isinstance(p, int))
    if not keys:
        return False
    owner = _model_at(keys)
    field = owner.model_fields.get(str(keys[-1])) if owner is not None else None
    return field is not None and is_secret_annotation(field.annotation)


MASK = "***"
# Plugin settings are plain dicts in Settings; these keys hold secrets whatever the plugin.
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|key|webhook_url|url|authorization|cookie)$", re.I)


def _mask_plugin_settings(values: Any, secret_fields: set[str], key: str = "") -> Any:
    if isinstance(values, dict):
        if key.lower() == "headers":  # every header value may carry a credential (Authorization, X-Api-Key)
            return {k: MASK for k in values}
        return {k: _mask_plugin_settings(v, secret_fields, str(k)) for k, v in values.items()}
    if isinstance(values, list):
        return [_mask_plugin_settings(v, secret_fields, key) for v in values]
    if values is not None and key and (key in secret_fields or _SECRET_KEY.search(key)):
        return MASK
    return values


PluginSecrets = Callable[[str], set[str]]
"""Which settings of a notifier plugin type are declared secret (the registry knows the plugins)."""


def _mask_model(model: BaseModel, plugin_secrets: PluginSecrets) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        value = getattr(model, name)
        if is_secret_annotation(field.annotation):
            out[name] = None if value is None else MASK
        elif isinstance(value, NotifierConfig):
            out[name] = _mask_notifier(value, plugin_secrets)
        elif isinstance(value, BaseModel):
            out[name] = _mask_model(value, plugin_secrets)
        elif isinstance(value, list) and value and isinstance(value[0], NotifierConfig):
            out[name] = [_mask_notifier(v, plugin_secrets) for v in value]
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            out[name] = {k: _mask_model(v, plugin_secrets) for k, v in value.items()}
        else:
            out[name] = _to_json(value)
    return out


def _mask_notifier(cfg: NotifierConfig, plugin_secrets: PluginSecrets) -> dict[str, Any]:
    out = _mask_model(cfg.model_copy(update={"settings": {}}), plugin_secrets)
    out["settings"] = _mask_plugin_settings(_to_json(cfg.settings), plugin_secrets(cfg.type))
    return out


def _to_json(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def mask_secrets(settings: Settings, plugin_secrets: PluginSecrets = lambda _type: set()) -> dict[str, Any]:
    """The active config as a dict with secrets masked by type, never by guesswork alone.

    Fields declared `SecretStr` in the config models, fields the notifier plugins declare secret,
    every notifier header value, and plugin keys named like credentials become '***'.
    """
    return _mask_model(settings, plugin_secrets)
