"""Repository of the durable notification outbox (migration 020).

All SQL of the outbox lives here; the notifier service (de)serialises payloads, so this module
knows rows, not notifications. Every call runs on the calling thread's own connection: DuckDB
gives each a consistent snapshot, so a listing never waits for a delivery update. Inserts come
in batches (one transaction per grouping pass). Times are naive UTC like every other table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

STATES = ("pending", "delivered", "dead")
Connect = Callable[[], duckdb.DuckDBPyConnection]


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A notification as stored: routing columns plus its JSON payload."""

    id: str
    channel: str
    kind: str
    alert_id: str
    rule: str
    service: str
    severity: str
    payload: str
    created_at: datetime
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An undelivered notification: payload, attempts so far and when to try next (naive UTC)."""

    payload: str
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class ListedRow:
    """One row of the outbox listing."""

    id: str
    channel: str
    kind: str
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    payload: str


class OutboxRepository:
    """Reads and writes of the `notification_outbox` table."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._local = threading.local()
        self._conns: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> duckdb.DuckDBPyConnection:
        conn: duckdb.DuckDBPyConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, list(params or [])).fetchall()

    def insert_many(self, rows: Sequence[OutboxRow]) -> set[str]:
        """Write rows as pending in one statement; returns the ids inserted (ids already there are
        left as they are: the same transition submitted twice is stored, and sent, once)."""
        if not rows:
            return set()
        ts = pa.timestamp("us")
        created = [_naive(r.created_at) for r in rows]
        table = pa.table(
            {
                "id": [r.id for r in rows],
                "channel": [r.channel for r in rows],
                "kind": [r.kind for r in rows],
                "alert_id": [r.alert_id for r in rows],
                "rule": [r.rule for r in rows],
                "service": [r.service for r in rows],
                "severity": [r.severity for r in rows],
                "payload": [r.payload for r in rows],
                "created_at": pa.array(created, ts),
                "next_attempt_at": pa.array([_naive(r.next_attempt_at) for r in rows], ts),
            }
        )
        conn = self._conn()
        conn.register("loglens_outbox_batch", table)  # one relation, not one statement per row
        try:
            done = conn.execute(
                "INSERT INTO notification_outbox SELECT id, channel, kind, alert_id, rule, service, severity, "
                "payload, 'pending', 0, NULL, created_at, next_attempt_at, created_at, NULL "
                "FROM loglens_outbox_batch ON CONFLICT (id) DO NOTHING RETURNING id"
            ).fetchall()
        finally:
            conn.unregister("loglens_outbox_batch")
        return {str(r[0]) for r in done}

    def pending(self) -> list[PendingRow]:
        """Every undelivered notification, oldest first (what a restart resumes)."""
        rows = self._run(
            "SELECT payload, attempts, next_attempt_at FROM notification_outbox "
            "WHERE state = 'pending' ORDER BY created_at, id"
        )
        return [PendingRow(p, int(att), nxt) for p, att, nxt in rows]

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

    def requeue(self, nid: str, at: datetime) -> str | None:
        """Move a dead notification back to pending with a fresh attempt budget; its payload or None."""
        at = _naive(at)
        rows = self._run(
            "UPDATE notification_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
            "WHERE id = ? AND state = 'dead' RETURNING payload",
            [at, at, nid],
        )
        return str(rows[0][0]) if rows else None

    def list(
        self, state: str = "all", channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ListedRow]:
        """Rows newest first: `limit` from `offset`."""
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
            + " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        )
        return [ListedRow(*row) for row in self._run(sql, [*params, limit, offset])]

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
        """Close every connection (idempotent)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(duckdb.Error):
                conn.close()
        self._local = threading.local()
