"""DuckDB store: one writer thread fed by a bounded queue, group commit, migrations, retention.

Ingest hands `submit()` an Arrow batch plus its rejections and gets a Future that resolves only
after the batch is committed (DuckDB fsyncs its WAL on commit). The writer drains whatever is
queued into one transaction — logs, dead letters, metric upserts, the service registry and
idempotency keys together, so after any crash the metrics match the stored logs exactly.
Reads use their own cursors on the same database (MVCC), never the writer's connection.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from loglens import metrics
from loglens.errors import Backpressure, StorageError
from loglens.models import CommitEvent as CommitEvent  # re-exported: listeners import it from here
from loglens.models import Rejection

log = logging.getLogger("loglens.store")

_DEAD_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("received_at", pa.timestamp("us")),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("replayed_at", pa.timestamp("us")),
    ]
)


@dataclass(frozen=True, slots=True)
class CommitReceipt:
    """What the writer committed for one submitted batch."""

    accepted: int
    rejected: int
    duplicate: bool = False


@dataclass(slots=True)
class _Item:
    table: pa.Table
    rejections: list[Rejection]
    received_us: int
    idempotency_key: str | None
    future: Future[CommitReceipt] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return self.table.num_rows + len(self.rejections)


_STOP = object()


class _FollowingCursor:
    """A DuckDB connection that is re-created whenever its store reopens the database."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._generation = -1
        self._cursor: duckdb.DuckDBPyConnection | None = None

    def _current(self) -> duckdb.DuckDBPyConnection:
        store = self._store
        if self._cursor is None or self._generation != store.reopens:
            if store._db is None:
                raise StorageError("store is closed")
            self._cursor = store._db.cursor()
            self._generation = store.reopens
        return self._cursor

    def execute(self, *args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        return self._current().execute(*args, **kwargs)

    def close(self) -> None:
        if self._cursor is not None:
            with contextlib.suppress(duckdb.Error):
                self._cursor.close()
            self._cursor = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)


class Store:
    """The DuckDB database of loglens. `start()` opens it and launches the writer thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_queue_logs: int = 500_000,
        max_batch_logs: int = 100_000,
        retention_days: float = 7.0,
        metrics_retention_days: float = 90.0,
        retention_interval_s: float = 60.0,
        commit_window_s: float = 0.02,
        memory_limit: str = "256MB",
    ) -> None:
        self.path = Path(path)
        self.max_queue_logs = max_queue_logs
        self.max_batch_logs = max_batch_logs
        self.retention_days = retention_days
        self.metrics_retention_days = metrics_retention_days
        self.retention_interval_s = retention_interval_s
        self.commit_window_s = commit_window_s
        self.memory_limit = memory_limit
        self._last_group_items = 0
        self.listeners: list[Callable[[CommitEvent], None]] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._drain_rate = 100_000.0  # logs/s, EWMA of observed commit throughput
        self._thread: threading.Thread | None = None
        self._db: duckdb.DuckDBPyConnection | None = None
        self._next_log_id = 1
        self._next_dead_id = 1
        self._local = threading.local()
        self._last_retention = time.monotonic()  # first retention pass after one interval
        self.last_error: str | None = None
        self.commits = 0
        self.reopens = 0  # times the writer reopened an invalidated database (see _reopen_if_invalidated)
        self.last_commit_seconds = 0.0

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Store:
        """Open (creating if needed) the database, apply migrations and start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(self.path), config={"memory_limit": self.memory_limit})
        except duckdb.Error as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from None
        self._migrate()
        self._load_next_ids()
        self._thread = threading.Thread(target=self._run, name="loglens-writer", daemon=True)
        self._thread.start()
        return self

    def _load_next_ids(self) -> None:
        assert self._db is not None
        row = self._db.execute("SELECT coalesce(max(id), 0) FROM logs").fetchone()
        self._next_log_id = int(row[0]) + 1 if row else 1
        row = self._db.execute("SELECT coalesce(max(id), 0) FROM dead_letter").fetchone()
        self._next_dead_id = int(row[0]) + 1 if row else 1

    def _reopen_if_invalidated(self) -> None:
        """Reopen the database file when DuckDB invalidated the connection. Writer thread only.

        A fatal DuckDB error (e.g. an automatic checkpoint hitting a full disk) invalidates the
        database instance until it is reopened; without this the store would answer 503 forever
        after space returns. Reopening replays the WAL, so the next ids are read again. When the
        reopen itself fails (disk still full) the next commit tries again.
        """
        assert self._db is not None
        try:
            self._db.execute("SELECT 1").fetchall()
            return
        except duckdb.Error:
            pass
        with contextlib.suppress(duckdb.Error):
            self._db.close()
        try:
            self._db = duckdb.connect(str(self.path), config={"memory_limit": self.memory_limit})
            self._load_next_ids()
        except duckdb.Error as exc:
            log.error("store reopen failed", extra={"error": str(exc)})
            return
        self.reopens += 1
        log.warning("store reopened after a fatal error", extra={"path": str(self.path)})

    def close(self) -> None:
        """Commit everything queued, checkpoint and close. Safe to call twice."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._db is not None:
            with contextlib.suppress(duckdb.Error):
                self._db.execute("CHECKPOINT")
            self._db.close()
            self._db = None

    def __enter__(self) -> Store:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        assert self._db is not None
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR)")
        done = {r[0] for r in db.execute("SELECT version FROM schema_migrations").fetchall()}
        files = sorted(
            (f for f in resources.files("loglens.store.sql").iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
        )
        for f in files:
            version = int(f.name.split("_", 1)[0])
            if version in done:
                continue
            db.execute("BEGIN")
            db.execute(f.read_text(encoding="utf-8"))
            db.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, f.name])
            db.execute("COMMIT")

    # ---- write path ------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Logs submitted and not yet committed."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds a client should wait, from the queue depth and the observed drain rate."""
        return max(1, math.ceil(self._pending / max(self._drain_rate, 1.0)))

    def submit(
        self,
        table: pa.Table,
        rejections: list[Rejection],
        received_us: int,
        idempotency_key: str | None = None,
    ) -> Future[CommitReceipt]:
        """Queue a validated batch; the Future resolves after its commit. Raises Backpressure."""
        if self._thread is None:
            raise StorageError("store is not running")
        item = _Item(table, rejections, received_us, idempotency_key)
        with self._pending_lock:
            if self._pending and self._pending + item.size > self.max_queue_logs:
                raise Backpressure(f"ingest queue full ({self._pending} logs waiting for commit)", self.retry_after())
            self._pending += item.size
        self._queue.put(item)
        return item.future

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() - self._last_retention > self.retention_interval_s:
                    self._maintenance()
                continue
            if first is _STOP:
                break
            items = [first]
            size = first.size
            # Group commit: take everything already waiting, up to the batch cap. When the last
            # group had several requesters (many clients each waiting for their commit), wait a
            # moment — at most the configured window, at most one commit's duration — so their
            # next requests share this commit instead of paying for one each. A lone client
            # never waits.
            deadline = time.monotonic()
            if self._last_group_items > 1 and size < self.max_batch_logs // 10:
                deadline += min(self.commit_window_s, max(0.001, self.last_commit_seconds))
            while size < self.max_batch_logs:
                try:
                    remaining = deadline - time.monotonic()
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
                size += nxt.size
            self._last_group_items = len(items)
            self._commit_group(items)
            if time.monotonic() - self._last_retention > self.retention_interval_s:
                self._maintenance()

    def _commit_group(self, items: list[_Item]) -> None:
        assert self._db is not None
        db = self._db
        started = time.perf_counter()
        try:
            db.execute("BEGIN")
            keyed = [it.idempotency_key for it in items if it.idempotency_key]
            seen: set[str] = set()
            if keyed:
                rows = db.execute("SELECT key FROM ingest_keys WHERE key IN (SELECT unnest(?))", [keyed]).fetchall()
                seen = {r[0] for r in rows}
            fresh: list[_Item] = []
            duplicates: set[int] = set()
            for idx, it in enumerate(items):
                if it.idempotency_key and it.idempotency_key in seen:
                    duplicates.add(idx)
                else:
                    fresh.append(it)
                    if it.idempotency_key:
                        seen.add(it.idempotency_key)
            tables = [it.table for it in fresh if it.table.num_rows]
            logs = pa.concat_tables(tables) if tables else None
            partials = metrics.Partials.empty()
            if logs is not None and logs.num_rows:
                n = logs.num_rows
                ids = pa.array(np.arange(self._next_log_id, self._next_log_id + n, dtype=np.int64))
                logs = logs.add_column(0, "id", ids)
                db.register("_batch_logs", logs)
                db.execute("INSERT INTO logs SELECT * FROM _batch_logs")
                db.unregister("_batch_logs")
                partials = metrics.aggregate(logs)
                self._upsert_metrics(db, partials)
                self._upsert_services(db, logs)
            dead = [(it.received_us, r) for it in fresh for r in it.rejections]
            if dead:
                self._insert_dead(db, dead)
            for it in fresh:
                if it.idempotency_key:
                    db.execute(
                        "INSERT INTO ingest_keys VALUES (?, ?, ?, make_timestamp(?))",
                        [it.idempotency_key, it.table.num_rows, len(it.rejections), it.received_us],
                    )
            db.execute("COMMIT")
        except Exception as exc:  # any DuckDB/IO failure: nothing of this group is acknowledged
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("commit failed", extra={"error": self.last_error, "logs": sum(i.size for i in items)})
            err = StorageError(f"store write failed: {exc}", retry_after=5)
            self._finish(items, lambda it: it.future.set_exception(err))
            self._reopen_if_invalidated()
            return
        if logs is not None:
            self._next_log_id += logs.num_rows
        self._next_dead_id += len(dead)
        self.last_error = None
        elapsed = time.perf_counter() - started
        total = sum(it.size for it in items)
        self.commits += 1
        self.last_commit_seconds = elapsed
        if elapsed > 0 and total >= 1000:
            self._drain_rate = 0.8 * self._drain_rate + 0.2 * (total / elapsed)

        dup_items = {id(items[i]) for i in duplicates}

        def resolve(it: _Item) -> None:
            dup = id(it) in dup_items
            it.future.set_result(CommitReceipt(0 if dup else it.table.num_rows, 0 if dup else len(it.rejections), dup))

        self._finish(items, resolve)
        if self.listeners and (logs is not None or dead):
            event = CommitEvent(logs if logs is not None else pa.table({}), partials, len(dead), int(time.time() * 1e6))
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:  # a broken listener must never break the writer
                    log.exception("commit listener failed")

    def _finish(self, items: list[_Item], action: Callable[[_Item], None]) -> None:
        with self._pending_lock:
            self._pending -= sum(it.size for it in items)
        for it in items:
            action(it)

    @staticmethod
    def _upsert_metrics(db: duckdb.DuckDBPyConnection, p: metrics.Partials) -> None:
        db.register("_p_minute", p.minute)
        db.execute(
            """
            INSERT INTO metrics_minute SELECT * FROM _p_minute
            ON CONFLICT (service, minute) DO UPDATE SET
                count = count + EXCLUDED.count, debug = debug + EXCLUDED.debug, info = info + EXCLUDED.info,
                warn = warn + EXCLUDED.warn, error = error + EXCLUDED.error, fatal = fatal + EXCLUDED.fatal,
                late = late + EXCLUDED.late, rt_count = rt_count + EXCLUDED.rt_count,
                rt_sum = rt_sum + EXCLUDED.rt_sum,
                rt_min = least(rt_min, EXCLUDED.rt_min), rt_max = greatest(rt_max, EXCLUDED.rt_max)
            """
        )
        db.unregister("_p_minute")
        if p.sketch.num_rows:
            db.register("_p_sketch", p.sketch)
            db.execute(
                "INSERT INTO latency_sketch SELECT * FROM _p_sketch "
                "ON CONFLICT (service, minute, bucket) DO UPDATE SET count = count + EXCLUDED.count"
            )
            db.unregister("_p_sketch")
        if p.users.num_rows:
            db.register("_p_users", p.users)
            db.execute(
                "INSERT INTO user_minute SELECT * FROM _p_users "
                "ON CONFLICT (service, minute, user_id) DO UPDATE SET count = count + EXCLUDED.count"
            )
            db.unregister("_p_users")

    @staticmethod
    def _upsert_services(db: duckdb.DuckDBPyConnection, logs: pa.Table) -> None:
        db.register("_svc_logs", logs)
        db.execute(
            """
            INSERT INTO services
            SELECT service, min(received_at), max(received_at), max(ts), count(*),
                   count(*) FILTER (WHERE level IN ('ERROR', 'FATAL'))
            FROM _svc_logs GROUP BY service
            ON CONFLICT (service) DO UPDATE SET
                last_seen = greatest(last_seen, EXCLUDED.last_seen),
                last_event_ts = greatest(last_event_ts, EXCLUDED.last_event_ts),
                total = total + EXCLUDED.total, errors = errors + EXCLUDED.errors
            """
        )
        db.unregister("_svc_logs")

    def _insert_dead(self, db: duckdb.DuckDBPyConnection, dead: list[tuple[int, Rejection]]) -> None:
        n = len(dead)
        table = pa.Table.from_arrays(
            [
                pa.array(range(self._next_dead_id, self._next_dead_id + n), pa.int64()),
                pa.array([d[0] for d in dead], pa.int64()).cast(pa.timestamp("us")),
                pa.array([d[1].source for d in dead], pa.string()),
                pa.array([d[1].reason for d in dead], pa.string()),
                pa.array([d[1].raw for d in dead], pa.string()),
                pa.nulls(n, pa.timestamp("us")),
            ],
            schema=_DEAD_SCHEMA,
        )
        db.register("_dead", table)
        db.execute("INSERT INTO dead_letter SELECT * FROM _dead")
        db.unregister("_dead")

    # ---- retention -------------------------------------------------------------------------
    def _maintenance(self) -> None:
        """Delete expired rows in small steps so ingest never waits long behind retention."""
        self._last_retention = time.monotonic()
        if self._db is None:
            return
        try:
            started = time.monotonic()
            # A full step means more may be expired (e.g. after retention_days was lowered): keep
            # stepping only while no ingest waits and for at most a second, so commits never queue long.
            while (
                self.apply_retention(time.time(), max_rows=50_000) >= 50_000
                and self._queue.empty()
                and time.monotonic() - started < 1.0
            ):
                pass
        except duckdb.Error as exc:
            log.warning("retention step failed", extra={"error": str(exc)})
            self._reopen_if_invalidated()

    def apply_retention(self, now_s: float, max_rows: int = 50_000) -> int:
        """One retention step at wall time `now_s`; returns raw log rows deleted. Writer thread only."""
        assert self._db is not None
        db = self._db
        log_cutoff = int((now_s - self.retention_days * 86400) * 1e6)
        metric_cutoff = int((now_s - self.metrics_retention_days * 86400) * 1e6)
        deleted = db.execute(
            "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts < make_timestamp(?) LIMIT ?)",
            [log_cutoff, max_rows],
        ).fetchone()
        db.execute("DELETE FROM dead_letter WHERE received_at < make_timestamp(?)", [log_cutoff])
        for table in ("metrics_minute", "latency_sketch", "user_minute"):
            db.execute(f"DELETE FROM {table} WHERE minute < make_timestamp(?)", [metric_cutoff])
        return int(deleted[0]) if deleted else 0

    # ---- read path -------------------------------------------------------------------------
    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for the calling thread (DuckDB connections are not shared across threads)."""
        if self._db is None:
            raise StorageError("store is closed")
        cur = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "db", None) is not self._db:
            cur = self._db.cursor()
            self._local.cursor = cur
            self._local.db = self._db
        yield cur

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection to this database for a component's own tables (alerts, outbox, ...).

        DuckDB serialises conflicting writes itself; the writer thread stays the only writer of
        the log, metric and dead-letter tables. The connection follows the store when it reopens
        the file after a fatal error (e.g. a full disk), so components keep working afterwards.
        """
        if self._db is None:
            raise StorageError("store is closed")
        return _FollowingCursor(self)  # type: ignore[return-value]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read-only query and return all rows."""
        with self.reader() as cur:
            return cur.execute(sql, params or []).fetchall()

    def query_arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a read-only query and return an Arrow table."""
        with self.reader() as cur:
            return cur.sql(sql, params=params or None).to_arrow_table()

    def size_bytes(self) -> int:
        """Size of the database file and its WAL on disk."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total
