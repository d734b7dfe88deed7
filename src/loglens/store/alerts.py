"""Repository of the alerting tables (migration 010): alerts, anomalies and silences.

All SQL of alerting lives here. Writes go through `AlertWriter`, one thread with a bounded
queue that applies everything queued since its last pass in one transaction, so an evaluation
that changes 20,000 alerts costs one commit and the evaluator never waits for the disk. Reads
use a connection of their own per thread: DuckDB gives each connection a consistent snapshot
(MVCC), so an API read never waits for the writer and the writer never waits for a read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import duckdb
import orjson
import pyarrow as pa

from loglens.models import Alert, AlertRow, AnomalyDoc, SilenceRow, iso

log = logging.getLogger("loglens.store.alerts")

Connect = Callable[[], duckdb.DuckDBPyConnection]
WRITE_SLICE = 2000  # alert rows per Arrow relation inside one transaction
T = TypeVar("T")


def _naive(dt: datetime | None) -> datetime | None:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt is not None and dt.tzinfo else dt


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _epoch(dt: datetime) -> float:
    return (_aware(dt) or datetime.fromtimestamp(0, UTC)).timestamp()


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A bounded slice of a listing and the offset of the next one (None: this was the last)."""

    items: list[T]
    next_offset: int | None


_ALERT_COLS = "id, rule, service, severity, state, value, threshold, summary, started_at, fired_at, resolved_at, labels"


class AlertRepository:
    """Reads and writes of the alerts, anomalies and silences tables."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._local = threading.local()
        self._conns: list[duckdb.DuckDBPyConnection] = []
        self._conns_lock = threading.Lock()

    def _conn(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection (DuckDB connections are not shared between threads)."""
        conn: duckdb.DuckDBPyConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this repository opened."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(duckdb.Error):
                conn.close()
        self._local = threading.local()

    # ---- writes (one transaction per call) ---------------------------------------------------
    def write(self, alerts: Sequence[AlertRow], anomalies: Sequence[tuple[AnomalyDoc, float]]) -> None:
        """Upsert alert rows and anomaly documents in one transaction."""
        if not alerts and not anomalies:
            return
        conn = self._conn()
        conn.execute("BEGIN TRANSACTION")
        try:
            if alerts:
                latest: dict[str, AlertRow] = {}
                for row in alerts:  # several changes of one alert in a batch: the last one wins
                    latest[row.alert.id] = row
                # Arrow relations, not executemany (20,000 rows: a fraction of a second, not minutes),
                # in slices with a pause between them so an alert storm never holds the GIL for long
                pending = list(latest.values())
                for i in range(0, len(pending), WRITE_SLICE):
                    if i:
                        time.sleep(0.002)
                    conn.register("loglens_alert_batch", _alerts_table(pending[i : i + WRITE_SLICE]))
                    try:
                        conn.execute("INSERT OR REPLACE INTO alerts SELECT * FROM loglens_alert_batch")
                    finally:
                        conn.unregister("loglens_alert_batch")
            if anomalies:
                docs: dict[str, tuple[AnomalyDoc, float]] = {d["id"]: (d, at) for d, at in anomalies}
                table = pa.table(
                    {
                        "id": [d["id"] for d, _ in docs.values()],
                        "detected_at": pa.array([_dt(at) for _, at in docs.values()], pa.timestamp("us")),
                        "type": [d["type"] for d, _ in docs.values()],
                        "severity": [d["severity"] for d, _ in docs.values()],
                        "service": [d["service"] for d, _ in docs.values()],
                        "score": pa.array([float(d["score"]) for d, _ in docs.values()], pa.float64()),
                        "doc": [orjson.dumps(d).decode() for d, _ in docs.values()],
                    }
                )
                conn.register("loglens_anomaly_batch", table)
                try:
                    conn.execute("INSERT OR REPLACE INTO anomalies SELECT * FROM loglens_anomaly_batch")
                finally:
                    conn.unregister("loglens_anomaly_batch")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise

    def save_silence(self, s: SilenceRow) -> None:
        """Insert a silence."""
        self._conn().execute(
            "INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                s.id,
                orjson.dumps(s.matchers).decode(),
                _dt(s.starts_at),
                _dt(s.expires_at),
                s.comment,
                s.created_by,
                _dt(s.created_at),
            ],
        )

    def delete_silence(self, silence_id: str) -> None:
        """Remove a silence."""
        self._conn().execute("DELETE FROM silences WHERE id = ?", [silence_id])

    # ---- reads -------------------------------------------------------------------------------
    def load_active(self, limit: int | None = None) -> list[tuple[Alert, bool]]:
        """Pending and firing alerts with their notified flag (newest first, at most `limit`)."""
        sql = (
            f"SELECT {_ALERT_COLS}, notified FROM alerts WHERE state IN ('pending', 'firing') ORDER BY started_at DESC"
        )
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._conn().execute(sql, params).fetchall()
        return [(_alert(r), bool(r[12])) for r in rows]

    def list_alerts(self, state: str | None, limit: int, offset: int = 0) -> Page[Alert]:
        """Alerts newest first, optionally of one state: `limit` rows from `offset`."""
        sql = f"SELECT {_ALERT_COLS} FROM alerts"
        params: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY started_at DESC, id LIMIT ? OFFSET ?"
        params += [limit + 1, offset]
        rows = self._conn().execute(sql, params).fetchall()
        return Page([_alert(r) for r in rows[:limit]], offset + limit if len(rows) > limit else None)

    def list_anomalies(self, limit: int, service: str | None = None, offset: int = 0) -> Page[AnomalyDoc]:
        """Anomaly documents newest first: `limit` rows from `offset`."""
        sql = "SELECT doc FROM anomalies"
        params: list[Any] = []
        if service:
            sql += " WHERE service = ?"
            params.append(service)
        sql += " ORDER BY detected_at DESC, id LIMIT ? OFFSET ?"
        params += [limit + 1, offset]
        rows = self._conn().execute(sql, params).fetchall()
        docs = [orjson.loads(r[0]) for r in rows[:limit]]
        return Page(docs, offset + limit if len(rows) > limit else None)

    def load_silences(self) -> list[SilenceRow]:
        """Every stored silence."""
        rows = (
            self._conn()
            .execute("SELECT id, matchers, starts_at, expires_at, comment, created_by, created_at FROM silences")
            .fetchall()
        )
        return [
            SilenceRow(r[0], orjson.loads(r[1]), _epoch(r[2]), _epoch(r[3]), r[4], r[5], _epoch(r[6])) for r in rows
        ]


def _alerts_table(rows: list[AlertRow]) -> pa.Table:
    """Alert rows in the column order of the `alerts` table."""
    ts = pa.timestamp("us")
    alerts = [r.alert for r in rows]
    return pa.table(
        {
            "id": [a.id for a in alerts],
            "rule": [a.rule for a in alerts],
            "service": [a.service for a in alerts],
            "severity": [a.severity for a in alerts],
            "state": [a.state for a in alerts],
            "value": pa.array([a.value for a in alerts], pa.float64()),
            "threshold": pa.array([a.threshold for a in alerts], pa.float64()),
            "summary": [a.summary for a in alerts],
            "started_at": pa.array([_naive(a.started_at) for a in alerts], ts),
            "fired_at": pa.array([_naive(a.fired_at) for a in alerts], ts),
            "resolved_at": pa.array([_naive(a.resolved_at) for a in alerts], ts),
            "labels": [orjson.dumps(a.labels).decode() for a in alerts],
            "notified": pa.array([r.notified for r in rows], pa.bool_()),
            "updated_at": pa.array([_dt(r.updated_at) for r in rows], ts),
        }
    )


def _alert(r: tuple[Any, ...]) -> Alert:
    return Alert(
        id=r[0],
        rule=r[1],
        service=r[2],
        severity=r[3],
        state=r[4],
        value=r[5],
        threshold=r[6],
        summary=r[7],
        started_at=_aware(r[8]) or datetime.fromtimestamp(0, UTC),
        fired_at=_aware(r[9]),
        resolved_at=_aware(r[10]),
        labels=orjson.loads(r[11]),
    )


class AlertWriter:
    """Writes alert rows and anomalies on its own thread, one transaction per pass.

    `save_alerts`/`save_anomaly` never block: rows wait in a bounded queue. When more than
    `max_rows` wait (the disk is slow or failing), the oldest are dropped and counted in
    `dropped`; `on_overflow` is called once per overflow episode so a meta-alert can say so.
    Firing alerts stay in memory either way, so alerting itself goes on.
    """

    def __init__(
        self,
        repo: AlertRepository,
        *,
        max_rows: int = 200_000,
        on_overflow: Callable[[int], None] | None = None,
        on_error: Callable[[str | None], None] | None = None,
    ) -> None:
        self.repo = repo
        self.max_rows = max_rows
        self.on_overflow = on_overflow
        self.on_error = on_error
        self._alerts: deque[AlertRow] = deque()
        self._anomalies: deque[tuple[AnomalyDoc, float]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._overflowing = False
        self._busy = False
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return len(self._alerts) + len(self._anomalies)

    def save_alerts(self, rows: Sequence[AlertRow]) -> None:
        """Queue alert rows (thread-safe, never blocks on I/O)."""
        if rows:
            self._put(self._alerts, rows)

    def save_anomaly(self, doc: AnomalyDoc, detected_at: float) -> None:
        """Queue an anomaly document (thread-safe, never blocks on I/O)."""
        self._put(self._anomalies, [(doc, detected_at)])

    def _put(self, target: deque[Any], rows: Sequence[Any]) -> None:
        overflow = 0
        with self._cond:
            target.extend(rows)
            while len(self._alerts) + len(self._anomalies) > self.max_rows:
                (self._anomalies if self._anomalies else self._alerts).popleft()
                overflow += 1
            self.dropped += overflow
            first = overflow and not self._overflowing
            self._overflowing = self._overflowing or bool(overflow)
            self._cond.notify()
        if first and self.on_overflow is not None:
            self.on_overflow(overflow)

    def start(self) -> None:
        """Start the writer thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="loglens-alert-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (bounded by `timeout`) and stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self.flush()

    def flush(self) -> None:
        """Write everything queued now, in the calling thread (tests, backtests, shutdown)."""
        with self._cond:
            alerts, anomalies = list(self._alerts), list(self._anomalies)
            self._alerts.clear()
            self._anomalies.clear()
        self._write(alerts, anomalies)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the queue is empty and no write is running (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.queued and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self.queued > 0 or self._stopping)
                if self._stopping and not self.queued:
                    return
                alerts, anomalies = list(self._alerts), list(self._anomalies)
                self._alerts.clear()
                self._anomalies.clear()
                self._busy = True
            try:
                self._write(alerts, anomalies)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, alerts: list[AlertRow], anomalies: list[tuple[AnomalyDoc, float]]) -> None:
        if not alerts and not anomalies:
            return
        try:
            self.repo.write(alerts, anomalies)
        except Exception as exc:  # disk full, store closing: alerting goes on in memory
            self.failures += 1
            self.last_error = str(exc)
            log.error("cannot persist alerts", extra={"rows": len(alerts) + len(anomalies), "error": str(exc)})
            if self.on_error is not None:
                self.on_error(str(exc))
            return
        self.written += len(alerts) + len(anomalies)
        if self.last_error is not None and self.on_error is not None:
            self.on_error(None)
        self.last_error = None
        with self._cond:
            self._overflowing = False


def iso_of(epoch: float | None) -> str | None:
    """ISO time of epoch seconds (None stays None)."""
    return iso(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None
