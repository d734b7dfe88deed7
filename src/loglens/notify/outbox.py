"""The durable outbox table (migration 020): every notification is a row before it is sent.

`Outbox` owns one DuckDB connection (`Store.cursor()`), guarded by a lock because `submit()` may
be called from any thread while the delivery workers update rows from a thread pool. Times are
naive UTC like every other table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from loglens.models import Notification, iso
from loglens.notify.base import notification_from_dict, notification_to_dict

STATES = ("pending", "delivered", "dead")


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A pending notification as the workers see it."""

    notification: Notification
    attempts: int
    next_attempt_at: datetime  # naive UTC


class Outbox:
    """Reads and writes of the `notification_outbox` table."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params or []).fetchall()

    def insert(self, n: Notification, next_attempt_at: datetime) -> bool:
        """Write `n` as pending; False when its idempotency key is already there (nothing changes)."""
        a = n.alert
        now = _naive(n.created_at)
        rows = self._run(
            """
            INSERT INTO notification_outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, NULL, ?, ?, ?, NULL)
            ON CONFLICT (id) DO NOTHING RETURNING id
            """,
            [
                n.id,
                n.channel,
                n.kind,
                a.id,
                a.rule,
                a.service,
                a.severity,
                orjson.dumps(notification_to_dict(n)).decode(),
                now,
                _naive(next_attempt_at),
                now,
            ],
        )
        return bool(rows)

    def pending(self) -> list[OutboxEntry]:
        """Every undelivered notification, oldest first (what a restart resumes)."""
        rows = self._run(
            "SELECT payload, attempts, next_attempt_at FROM notification_outbox "
            "WHERE state = 'pending' ORDER BY created_at, id"
        )
        return [OutboxEntry(notification_from_dict(orjson.loads(p)), int(att), nxt) for p, att, nxt in rows]

    def mark_delivered(self, nid: str, attempts: int, at: datetime) -> None:
        """Record a successful delivery."""
        at = _naive(at)
        self._run(
            "UPDATE notification_outbox SET state = 'delivered', attempts = ?, delivered_at = ?, updated_at = ? "
            "WHERE id = ?",
            [attempts, at, at, nid],
        )

    def mark_retry(self, nid: str, attempts: int, error: str, next_at: datetime, at: datetime) -> None:
        """Record a failed attempt that will be retried at `next_at`."""
        self._run(
            "UPDATE notification_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, updated_at = ? "
            "WHERE id = ?",
            [attempts, error, _naive(next_at), _naive(at), nid],
        )

    def mark_dead(self, nid: str, attempts: int, error: str, at: datetime) -> None:
        """Give up on a notification; it stays visible with its last error."""
        self._run(
            "UPDATE notification_outbox SET state = 'dead', attempts = ?, last_error = ?, updated_at = ? WHERE id = ?",
            [attempts, error, _naive(at), nid],
        )

    def requeue(self, nid: str, at: datetime) -> OutboxEntry | None:
        """Move a dead notification back to pending with a fresh attempt budget."""
        at = _naive(at)
        rows = self._run(
            "UPDATE notification_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
            "WHERE id = ? AND state = 'dead' RETURNING payload",
            [at, at, nid],
        )
        return OutboxEntry(notification_from_dict(orjson.loads(rows[0][0])), 0, at) if rows else None

    def list(self, state: str = "all", channel: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Rows for the API, newest first."""
        where, params = [], []
        if state != "all":
            where.append("state = ?")
            params.append(state)
        if channel:
            where.append("channel = ?")
            params.append(channel)
        sql = (
            "SELECT id, channel, kind, state, attempts, last_error, created_at, next_attempt_at, updated_at, "
            "delivered_at, payload FROM notification_outbox"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, id LIMIT ?"
        )
        out = []
        for row in self._run(sql, [*params, limit]):
            nid, ch, kind, st, att, err, created, nxt, updated, delivered, payload = row
            doc = orjson.loads(payload)
            out.append(
                {
                    "id": nid,
                    "channel": ch,
                    "kind": kind,
                    "state": st,
                    "attempts": att,
                    "last_error": err,
                    "created_at": iso(created),
                    "next_attempt_at": iso(nxt) if st == "pending" else None,
                    "updated_at": iso(updated),
                    "delivered_at": iso(delivered),
                    "duration_seconds": doc.get("duration_seconds"),
                    "alert": doc["alert"],
                }
            )
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """{channel: {state: n}} over the whole table."""
        out: dict[str, dict[str, int]] = {}
        for ch, st, n in self._run("SELECT channel, state, count(*) FROM notification_outbox GROUP BY ALL"):
            out.setdefault(ch, dict.fromkeys(STATES, 0))[st] = int(n)
        return out

    def prune(self, before: datetime) -> int:
        """Delete delivered rows last touched before `before`; returns rows deleted."""
        rows = self._run(
            "DELETE FROM notification_outbox WHERE state = 'delivered' AND updated_at < ? RETURNING id",
            [_naive(before)],
        )
        return len(rows)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()
