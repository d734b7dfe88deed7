"""Dead-letter reads: list with filters and paging, one record, replay candidates.

Dead letters are written only by the loader (from WAL frames); a replay's "replayed" mark
travels in the WAL frame of the logs it re-ingests (see `Store.submit(replayed_dead_ids=...)`),
so it is applied in the same DuckDB transaction as those logs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loglens.models import iso
from loglens.store import Store
from loglens.store.queries import decode_cursor, encode_cursor


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _row_json(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "received_at": iso(r[1]), "source": r[2], "reason": r[3], "raw": r[4], "replayed_at": iso(r[5])}


def get(store: Store, dead_id: int) -> dict[str, Any] | None:
    """One dead-letter record with its full stored raw text, or None."""
    rows = store.query(
        "SELECT id, received_at, source, reason, raw, replayed_at FROM dead_letter WHERE id = ?", [dead_id]
    )
    return _row_json(rows[0]) if rows else None


def candidates(
    store: Store, reason: str | None, since: datetime | None, ids: list[int] | None, limit: int
) -> list[tuple[int, str, str]]:
    """(id, source, raw) of dead letters not yet replayed, matching every given filter, oldest first."""
    where: list[str] = ["replayed_at IS NULL"]
    params: list[Any] = []
    if reason:
        where.append("contains(lower(reason), lower(?))")
        params.append(reason)
    if since is not None:
        where.append("received_at >= ?")
        params.append(_naive_utc(since))
    if ids is not None:
        where.append("id IN (SELECT unnest(?))")
        params.append(list(ids))
    rows = store.query(
        f"SELECT id, source, raw FROM dead_letter WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", [*params, limit]
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def dead_letters(
    store: Store,
    *,
    reason: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Rejected records newest first, with reason, source, arrival time and raw text."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if reason:
        where.append("contains(lower(reason), lower(?))")
        params.append(reason)
    if source:
        where.append("source = ?")
        params.append(source)
    if since:
        where.append("received_at >= ?")
        params.append(_naive_utc(since))
    total = store.query(f"SELECT count(*) FROM dead_letter WHERE {' AND '.join(where)}", params)[0][0]
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        where.append("id < ?")
        params.append(last_id)
    rows = store.query(
        f"SELECT id, received_at, source, reason, raw, replayed_at FROM dead_letter WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT ?",
        [*params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "total": int(total),
        "dead_letters": [_row_json(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1][0]) if more and rows else None,
    }
