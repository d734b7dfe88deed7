"""The one path every collector uses: decoded records → schema → store, answered after commit.

Protocol adapters (HTTP JSON, OTLP, syslog, tail, Loki, ES bulk) only turn their wire format
into `Parsed` records mapped onto the log schema, then call `IngestPipeline.ingest()`; so every
protocol gets the same validation, dead-letter, durability and backpressure guarantees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio.to_thread

from loglens.config import Settings
from loglens.errors import StorageError
from loglens.models import LOG_ARROW_SCHEMA, IngestResult, Rejection
from loglens.schema import LogSchema, Parsed, ValidatedBatch, now_us
from loglens.store import Store

# Below this many records validation runs on the event loop: a thread hop costs more than it saves.
_INLINE_RECORDS = 500
# What a draining server tells clients: retry after this many seconds (on another instance or after restart).
DRAIN_RETRY_AFTER_S = 5

log = logging.getLogger("loglens.ingest")

# Observer of every committed request: (source, accepted, rejections). Called on the event loop; keep it quick.
IngestObserver = Callable[[str, int, list[Rejection]], None]


class IngestPipeline:
    """Validate decoded records and commit them durably; one instance per running app."""

    def __init__(self, schema: LogSchema, store: Store, max_errors: int = 100) -> None:
        self.schema = schema
        self.store = store
        self.max_errors = max_errors
        self.observers: list[IngestObserver] = []
        self.draining = False  # set on SIGTERM: new requests get 503 + Retry-After
        self.in_flight = 0  # requests between the draining check and their commit

    def _admit(self) -> None:
        if self.draining:
            raise StorageError("server is shutting down; retry later", retry_after=DRAIN_RETRY_AFTER_S)

    def _observe(self, source: str, accepted: int, rejections: list[Rejection]) -> None:
        for observer in self.observers:
            try:
                observer(source, accepted, rejections)
            except Exception:  # a metrics bug must never fail an acknowledged request
                log.exception("ingest observer failed")

    def validate(self, parsed: Parsed, source: str) -> tuple[ValidatedBatch, int]:
        """Validate synchronously; returns the batch and the arrival time used (epoch µs)."""
        received = now_us()
        return self.schema.validate(parsed, source, received), received

    async def ingest(self, parsed: Parsed, source: str, idempotency_key: str | None = None) -> IngestResult:
        """Validate, commit, and report. Raises Backpressure / StorageError; never drops silently."""
        self._admit()
        self.in_flight += 1
        try:
            if len(parsed) > _INLINE_RECORDS:
                batch, received = await anyio.to_thread.run_sync(self.validate, parsed, source)
            else:
                batch, received = self.validate(parsed, source)
            future = self.store.submit(batch.table, batch.rejections, received, idempotency_key)
            receipt = await asyncio.wrap_future(future)
        finally:
            self.in_flight -= 1
        if not receipt.duplicate:
            self._observe(source, receipt.accepted, batch.rejections)
        return IngestResult(
            accepted=receipt.accepted,
            rejected=receipt.rejected,
            errors=[] if receipt.duplicate else batch.rejections[: self.max_errors],
            duplicate=receipt.duplicate,
        )

    async def reject_whole(self, raw: bytes | str, reason: str, source: str) -> None:
        """Record an undecodable request body in the dead-letter store (one record)."""
        self._admit()
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        rejection = Rejection(0, reason, self.schema.truncate_raw(text), source)
        self.in_flight += 1
        try:
            future = self.store.submit(LOG_ARROW_SCHEMA.empty_table(), [rejection], now_us())
            await asyncio.wrap_future(future)
        finally:
            self.in_flight -= 1
        self._observe(source, 0, [rejection])


def build_pipeline(settings: Settings) -> IngestPipeline:
    """The schema, store (not started) and pipeline that `settings` describe."""
    schema = LogSchema.from_file(
        settings.schemas.log,
        allowed_lateness_s=settings.ingest.allowed_lateness_seconds,
        max_future_skew_s=settings.ingest.max_future_skew_seconds,
        raw_limit=settings.ingest.dead_letter_raw_limit,
    )
    store = Store(
        settings.storage.path,
        max_queue_logs=settings.ingest.max_queue_logs,
        max_batch_logs=settings.ingest.max_batch_logs,
        retention_days=settings.storage.retention_days,
        metrics_retention_days=settings.storage.metrics_retention_days,
        retention_interval_s=settings.storage.retention_interval_seconds,
        commit_window_s=settings.ingest.commit_interval_ms / 1000,
        memory_limit=settings.storage.memory_limit,
        wal_dir=settings.storage.wal_dir,
        wal_max_bytes=settings.storage.wal_max_bytes,
        wal_segment_bytes=settings.storage.wal_segment_bytes,
        load_interval_s=settings.storage.load_interval_ms / 1000,
        load_batch_logs=settings.storage.load_batch_logs,
    )
    return IngestPipeline(schema, store, settings.ingest.max_errors_reported)
