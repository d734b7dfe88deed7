"""Dead-letter inspection and replay: after a schema or mapping fix, re-validate rejected records.

`replay()` selects dead-letter rows not yet replayed (filtered by reason, arrival time or ids),
*claims* them first (`replayed_at` set in one UPDATE … WHERE replayed_at IS NULL), validates
their raw JSON against the CURRENT log schema, releases the claim of records that are still
invalid (so a later fix can replay them) and commits the valid ones through the store's writer
like any ingest. A record is therefore ingested at most once, even with two replays running at
the same time; a commit failure releases the claim. Raw text that is not one JSON object (a
truncated record, a syslog line, an undecodable body) is reported as skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from loglens.models import iso
from loglens.schema import LogSchema, now_us, parse_values
from loglens.store import Store

log = logging.getLogger("loglens.deadletter")

DEFAULT_LIMIT = 10_000
_MAX_ERRORS = 100


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


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _row_json(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "received_at": iso(r[1]), "source": r[2], "reason": r[3], "raw": r[4], "replayed_at": iso(r[5])}


def get(store: Store, dead_id: int) -> dict[str, Any] | None:
    """One dead-letter record with its full stored raw text, or None."""
    rows = store.query(
        "SELECT id, received_at, source, reason, raw, replayed_at FROM dead_letter WHERE id = ?", [dead_id]
    )
    return _row_json(rows[0]) if rows else None


def _candidates(
    store: Store, reason: str | None, since: datetime | None, ids: list[int] | None, limit: int
) -> list[int]:
    where: list[str] = ["replayed_at IS NULL"]
    params: list[Any] = []
    if reason:
        where.append("contains(lower(reason), lower(?))")
        params.append(reason)
    if since is not None:
        where.append("received_at >= ?")
        params.append(_naive(since))
    if ids is not None:
        where.append("id IN (SELECT unnest(?))")
        params.append(list(ids))
    rows = store.query(f"SELECT id FROM dead_letter WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", [*params, limit])
    return [r[0] for r in rows]


def _set_replayed(store: Store, ids: list[int], at: datetime | None) -> list[int]:
    """Claim (`at`) or release (None) rows; returns the ids that changed. Claims only unclaimed rows."""
    if not ids:
        return []
    cur = store.cursor()
    try:
        if at is None:
            rows = cur.execute(
                "UPDATE dead_letter SET replayed_at = NULL WHERE id IN (SELECT unnest(?)) RETURNING id", [ids]
            ).fetchall()
        else:
            rows = cur.execute(
                "UPDATE dead_letter SET replayed_at = ? WHERE id IN (SELECT unnest(?)) AND replayed_at IS NULL "
                "RETURNING id",
                [at, ids],
            ).fetchall()
    finally:
        cur.close()
    return [r[0] for r in rows]


def replay(
    store: Store,
    schema: LogSchema,
    *,
    reason: str | None = None,
    since: datetime | None = None,
    ids: list[int] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ReplayResult:
    """Re-validate matching dead letters with `schema` and ingest the valid ones (blocking: run off the loop)."""
    result = ReplayResult()
    candidates = _candidates(store, reason, since, ids, limit)
    if not candidates:
        return result
    now = now_us()
    claimed = set(_set_replayed(store, candidates, datetime.fromtimestamp(now / 1e6, UTC).replace(tzinfo=None)))
    result.matched = len(claimed)
    if not claimed:
        return result
    rows = store.query(
        "SELECT id, source, raw FROM dead_letter WHERE id IN (SELECT unnest(?)) ORDER BY id", [sorted(claimed)]
    )
    release: list[int] = []
    by_source: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for dead_id, source, raw in rows:
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
        batch = schema.validate(parse_values([v for _, v in records]), source, now)
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
    _set_replayed(store, release, None)
    if tables:
        try:
            store.submit(pa.concat_tables(tables), [], now).result()
        except Exception:
            _set_replayed(store, valid, None)  # nothing was stored: let a later replay try again
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
