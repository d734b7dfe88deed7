"""The one path every collector uses: decoded records → schema → store, answered after commit.

Protocol adapters (HTTP JSON, OTLP, syslog, tail, Loki, ES bulk) only turn their wire format
into `Parsed` records mapped onto the log schema, then call `IngestPipeline.ingest()`; so every
protocol gets the same validation, dead-letter, durability and backpressure guarantees.
"""

from __future__ import annotations

import asyncio

import anyio.to_thread

from loglens.models import LOG_ARROW_SCHEMA, IngestResult, Rejection
from loglens.schema import LogSchema, Parsed, ValidatedBatch, now_us
from loglens.store import Store

# Below this many records validation runs on the event loop: a thread hop costs more than it saves.
_INLINE_RECORDS = 500


class IngestPipeline:
    """Validate decoded records and commit them durably; one instance per running app."""

    def __init__(self, schema: LogSchema, store: Store, max_errors: int = 100) -> None:
        self.schema = schema
        self.store = store
        self.max_errors = max_errors

    def validate(self, parsed: Parsed, source: str) -> tuple[ValidatedBatch, int]:
        """Validate synchronously; returns the batch and the arrival time used (epoch µs)."""
        received = now_us()
        return self.schema.validate(parsed, source, received), received

    async def ingest(self, parsed: Parsed, source: str, idempotency_key: str | None = None) -> IngestResult:
        """Validate, commit, and report. Raises Backpressure / StorageError; never drops silently."""
        if len(parsed) > _INLINE_RECORDS:
            batch, received = await anyio.to_thread.run_sync(self.validate, parsed, source)
        else:
            batch, received = self.validate(parsed, source)
        future = self.store.submit(batch.table, batch.rejections, received, idempotency_key)
        receipt = await asyncio.wrap_future(future)
        return IngestResult(
            accepted=receipt.accepted,
            rejected=receipt.rejected,
            errors=[] if receipt.duplicate else batch.rejections[: self.max_errors],
            duplicate=receipt.duplicate,
        )

    async def reject_whole(self, raw: bytes | str, reason: str, source: str) -> None:
        """Record an undecodable request body in the dead-letter store (one record)."""
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        rejection = Rejection(0, reason, self.schema.truncate_raw(text), source)
        future = self.store.submit(LOG_ARROW_SCHEMA.empty_table(), [rejection], now_us())
        await asyncio.wrap_future(future)
