"""The one path every collector uses: decoded records → schema → store, answered after commit.

Protocol adapters (HTTP JSON, OTLP, syslog, tail, Loki, ES bulk) only turn their wire format
into `Parsed` records mapped onto the log schema, then call `IngestPipeline.ingest()`; so every
protocol gets the same validation, dead-letter, durability and backpressure guarantees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

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
            receipt = await self.store.submit_async(batch.logs, batch.rejections, received, idempotency_key)
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
            await self.store.submit_async(LOG_ARROW_SCHEMA.empty_table(), [rejection], now_us())
        finally:
            self.in_flight -= 1
        self._observe(source, 0, [rejection])


# Opens a pipeline into the local store for a `with` block (the CLI's `ingest`/`tail` without a
# server); the runtime provides it (`loglens.runtime.local_pipeline`), so ingest never builds a store.
LocalPipeline = Callable[[Settings], AbstractAsyncContextManager[IngestPipeline]]
