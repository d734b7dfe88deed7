"""Dead-letter replay: after a schema or mapping fix, re-validate rejected records.

`replay()` selects dead-letter rows not yet replayed (filtered by reason, arrival time or ids),
claims them in the store (so two replays running at once never take the same record), and
validates their raw JSON against the CURRENT log schema through the ingest pipeline. The valid
ones are submitted like any ingest, in ONE batch that also carries their dead-letter ids: the
WAL frame holds the logs and the "replayed" mark together, and the loader applies both in one
DuckDB transaction. A crash before the WAL fsync leaves every record replayable; a crash after
it replays the frame — nothing is lost and nothing is ingested twice. Records still invalid or
not one JSON object (a truncated record, a syslog line, an undecodable body) stay unreplayed
and are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from loglens.ingest.pipeline import IngestPipeline
from loglens.schema import now_us, parse_values
from loglens.store import deadletters

log = logging.getLogger("loglens.ingest.replay")

DEFAULT_LIMIT = 10_000
_MAX_ERRORS = 100

get = deadletters.get


@dataclass
class ReplayResult:
    """What one replay did."""

    matched: int = 0
    replayed: int = 0
    still_invalid: int = 0
    skipped: int = 0
    replayed_ids: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "matched": self.matched,
            "replayed": self.replayed,
            "still_invalid": self.still_invalid,
            "skipped": self.skipped,
            "replayed_ids": self.replayed_ids[:1000],
            "errors": self.errors,
        }


def replay(
    pipeline: IngestPipeline,
    *,
    reason: str | None = None,
    since: datetime | None = None,
    ids: list[int] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ReplayResult:
    """Re-validate matching dead letters and ingest the valid ones atomically (blocking: run off the loop)."""
    store = pipeline.store
    result = ReplayResult()
    rows = deadletters.candidates(store, reason, since, ids, limit)
    claimed = set(store.claim_dead_letters([r[0] for r in rows]))
    result.matched = len(claimed)
    if not claimed:
        return result
    release: list[int] = []
    by_source: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for dead_id, source, raw in rows:
        if dead_id not in claimed:
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            result.skipped += 1
            release.append(dead_id)
            _error(result, dead_id, "raw text is not one JSON object (truncated, or a protocol's own format)")
            continue
        by_source.setdefault(source, []).append((dead_id, value))
    tables: list[pa.Table] = []
    valid: list[int] = []
    for source, records in by_source.items():
        batch, _ = pipeline.validate(parse_values([v for _, v in records]), source)
        bad = {r.index: r.reason for r in batch.rejections}
        for i, (dead_id, _) in enumerate(records):
            if i in bad:
                result.still_invalid += 1
                release.append(dead_id)
                _error(result, dead_id, bad[i])
            else:
                valid.append(dead_id)
        if batch.table.num_rows:
            tables.append(batch.table)
    store.release_dead_letters(release)
    if tables:
        try:
            # one batch, one WAL frame: the logs and their dead letters' "replayed" mark together
            store.submit(pa.concat_tables(tables), [], now_us(), replayed_dead_ids=valid).result()
        except Exception:
            store.release_dead_letters(valid)  # nothing was written: a later replay may try again
            raise
    result.replayed = len(valid)
    result.replayed_ids = sorted(valid)
    log.info(
        "dead letters replayed",
        extra={
            "matched": result.matched,
            "replayed": result.replayed,
            "still_invalid": result.still_invalid,
            "skipped": result.skipped,
        },
    )
    return result


def _error(result: ReplayResult, dead_id: int, reason: str) -> None:
    if len(result.errors) < _MAX_ERRORS:
        result.errors.append({"id": dead_id, "reason": reason})
