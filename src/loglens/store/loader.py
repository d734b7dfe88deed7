"""Background loader: WAL frames → DuckDB in large transactions, exactly once.

The loader is the only writer of the log-side tables (logs, dead letters, metric partials,
services, idempotency keys). It reads durable frames from the WAL starting at the LSN DuckDB
last recorded, and applies up to `batch_logs` logs of them in ONE transaction that also moves
`wal_state.loaded_lsn` past them. A crash before the COMMIT leaves the old LSN and replays
the same frames; a crash after it finds them loaded and skips them: every frame lands once.

A load inserts only what the frames hold (logs, dead letters, keys, replay marks) and the LSN,
as one script: DuckDB's per-statement cost, not the rows, is what a small load pays. The logs
above `wal_state.aggregated_id` (the *tail*) are aggregated on read by the metric and service
views; every `fold_interval_s`, or once `fold_logs` are waiting, `fold()` appends their partials
to the partial tables and moves `aggregated_id`, in one transaction (migration 015).

It wakes when `interval_s` has passed since frames became durable, when `batch_logs` logs or
`batch_bytes` are waiting, or when a reader asks for freshness (`Store.query` waits for what was
acknowledged before it began; see `request_flush`). Under a heavy stream it waits past
`interval_s` — at most `_STRETCH_S` — while the logs waiting are on pace to make a whole load
(`batch_logs`, two DuckDB row groups) by then: DuckDB writes the whole row groups of an insert
straight into the database file, compressed once, where a smaller insert goes through DuckDB's
own WAL and is compressed again at its checkpoint (measured in-process, 1M logs: 3.3-3.6 CPU-s
per million for loads of 60,000 logs, 1.8-2.4 for loads of 200,000-245,760). A failed load
(disk full, I/O error, invalidated database) keeps the WAL, records the error, backs off and
retries; nothing is lost or skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from loglens.store.wal import FrameAt, Wal

log = logging.getLogger("loglens.store.loader")

_MAX_BACKOFF_S = 5.0
# DuckDB's row group (its default ROW_GROUP_SIZE): an insert of at least this many rows is written
# to the database file directly ("optimistic write") instead of through DuckDB's WAL.
ROW_GROUP_LOGS = 122_880
# A load of two row groups: a load of barely one leaves a small partial row group behind it, and
# DuckDB's checkpoint rewrites runs of those to merge them (measured: +1.1-2.0 CPU-s per million
# logs at the checkpoint for loads of 125,000 logs; loads of 200,000+ leave nothing to merge).
LOAD_LOGS = 2 * ROW_GROUP_LOGS
# Longest a heavy stream's logs wait for a whole load (reads never wait: they ask for a load).
_STRETCH_S = 1.0
# How often a stretched wait re-checks its pace (a stream that stops must not wait the whole stretch).
_STRETCH_POLL_S = 0.05


@dataclass(slots=True)
class LoaderStats:
    """What the loader did, for /metrics and `loglens status`."""

    loads: int = 0
    loaded_logs: int = 0
    loaded_bytes: int = 0
    failures: int = 0
    last_load_seconds: float = 0.0
    drain_bytes_per_s: float = 50e6  # EWMA of observed load throughput; a guess until measured
    last_error: str | None = None
    last_loaded_at: float = 0.0  # time.time() of the last successful load


class Loader:
    """The loader thread of one store."""

    def __init__(
        self,
        wal: Wal,
        connection: Callable[[], duckdb.DuckDBPyConnection],
        loaded_lsn: int,
        *,
        interval_s: float = 0.2,
        batch_logs: int = LOAD_LOGS,
        batch_bytes: int = 64 << 20,
        fold_logs: int = 50_000,
        fold_interval_s: float = 10.0,
        durable_lsn: Callable[[], int],
        on_loaded: Callable[[list[FrameAt]], None],
        on_failure: Callable[[], None],
        maintenance: Callable[[], None],
    ) -> None:
        self.wal = wal
        self._connection = connection
        self.loaded_lsn = loaded_lsn
        self.interval_s = interval_s
        self.batch_logs = batch_logs
        self.batch_bytes = batch_bytes
        self.fold_logs = fold_logs
        self.fold_interval_s = fold_interval_s
        # Logs loaded but not yet folded into the partial tables (unknown at start: assume some).
        self._tail_logs = 1
        self._last_fold = time.monotonic()
        self._inline_fold_failed = False  # a load that folded failed: load without folding until fold() succeeds
        self._durable_lsn = durable_lsn
        self._on_loaded = on_loaded
        self._on_failure = on_failure
        self._maintenance = maintenance
        self.stats = LoaderStats()
        self._cond = threading.Condition()
        self._flush = False
        self._stop = False
        self._first_pending: float | None = None
        # Logs announced by the writer and not yet loaded (a backlog found at start is not
        # counted: it is due at once anyway).
        self._pending_logs = 0
        self._thread: threading.Thread | None = None
        self.fail_next: Exception | None = None  # test hook: the next load raises this once

    # ---- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (a backlog found at start is due at once)."""
        if self._durable_lsn() > self.loaded_lsn:
            self._first_pending = time.monotonic() - self.interval_s
        self._thread = threading.Thread(target=self._run, name="loglens-loader", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True) -> None:
        """Load what is durable (when `drain`) and stop."""
        with self._cond:
            self._stop = True
            self._flush = drain
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def notify_durable(self, logs: int = 0) -> None:
        """The WAL grew by a frame of `logs` logs (writer thread): wake the loader when enough is waiting."""
        with self._cond:
            if self._first_pending is None:
                self._first_pending = time.monotonic()
            self._pending_logs += logs
            if self._full():
                self._cond.notify_all()

    def request_flush(self) -> None:
        """A reader waits for freshness: load now instead of at the next interval."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def wait_loaded(self, lsn: int, timeout: float) -> bool:
        """Block until everything before `lsn` is in DuckDB, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.loaded_lsn < lsn:
                self._flush = True
                self._cond.notify_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    @property
    def lag_bytes(self) -> int:
        """WAL bytes durable but not yet in DuckDB."""
        return max(0, self._durable_lsn() - self.loaded_lsn)

    # ---- thread ----------------------------------------------------------------------------------
    def _full(self) -> bool:
        """Whether a whole load is waiting: `batch_logs` logs or `batch_bytes`."""
        return self._pending_logs >= self.batch_logs or self._durable_lsn() - self.loaded_lsn >= self.batch_bytes

    def _stretching(self, waited: float) -> bool:
        """Whether to wait past the interval: the logs waiting are on pace to make a whole load
        within `_STRETCH_S` of the first of them (a stream that slows or stops loses the pace
        and is loaded at the next check)."""
        return waited < _STRETCH_S and self._pending_logs * _STRETCH_S >= self.batch_logs * waited

    def _due(self) -> bool:
        if self._durable_lsn() <= self.loaded_lsn:
            return self._stop
        if self._flush or self._stop or self._full():
            return True
        first = self._first_pending
        # None: the writer has not announced these bytes yet (it does right after the append);
        # its notify_durable() starts the interval.
        if first is None:
            return False
        waited = time.monotonic() - first
        return waited >= self.interval_s and not self._stretching(waited)

    def _wait_timeout(self) -> float:
        first = self._first_pending
        if first is None:
            return 0.5
        waited = time.monotonic() - first
        if waited >= self.interval_s:
            return _STRETCH_POLL_S  # stretching: re-check the pace
        return max(0.001, self.interval_s - waited)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if not self._due():
                    self._cond.wait(self._wait_timeout())
                due = self._due()
                stopping = self._stop
                drain = self._flush
                if due:
                    self._flush = False
            if stopping:
                # Final drain on a clean shutdown; a failure leaves the rest in the WAL for the next start.
                while drain and self._durable_lsn() > self.loaded_lsn and self._load_once():
                    pass
                if drain:
                    self.fold()  # leave the file with compact partials (the views are exact either way)
                return
            if not due:
                if self.fold_due():
                    self.fold()
                self._maintenance()
                continue
            if backoff:
                with self._cond:
                    self._cond.wait(backoff)  # interrupted by stop()
                if self._stop:
                    continue
            backoff = 0.0 if self._load_once() else min(_MAX_BACKOFF_S, max(0.1, backoff * 2))
            if not backoff:
                if self.fold_due():
                    self.fold()
                self._maintenance()  # rate-limited by the store; also runs under sustained load

    def _load_once(self) -> bool:
        """Load one batch of frames; True on success (or nothing to do)."""
        target = self._durable_lsn()
        start_lsn = self.loaded_lsn
        try:
            frames = list(self.wal.read(start_lsn, target, self.batch_logs))
            if not frames:
                return True
            started = time.perf_counter()
            self._apply(frames)
        except Exception as exc:  # disk full, I/O error, invalidated DB: keep the WAL, retry later
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.error("WAL load failed; will retry", extra={"error": self.stats.last_error, "lsn": start_lsn})
            with contextlib.suppress(Exception):
                self._on_failure()
            return False
        elapsed = time.perf_counter() - started
        end = frames[-1].end
        n_logs = sum(f.frame.n_logs + f.frame.n_dead for f in frames)
        st = self.stats
        st.loads += 1
        st.loaded_logs += n_logs
        st.loaded_bytes += end - start_lsn
        st.last_load_seconds = elapsed
        st.last_error = None
        st.last_loaded_at = time.time()
        if elapsed > 0 and end - start_lsn > 1 << 20:
            st.drain_bytes_per_s = 0.7 * st.drain_bytes_per_s + 0.3 * ((end - start_lsn) / elapsed)
        with self._cond:
            self.loaded_lsn = end
            self._pending_logs = max(0, self._pending_logs - sum(f.frame.n_logs for f in frames))
            # More is waiting (a backlog beyond one batch): due again at once.
            self._first_pending = None if end >= self._durable_lsn() else time.monotonic() - self.interval_s
            self._cond.notify_all()
        # Listing the segment directory costs more than a trickle load's own Python work; a
        # closed segment holds at least segment_bytes, so none can be wholly loaded before this.
        if end - self.wal.start_lsn >= self.wal.segment_bytes:
            with contextlib.suppress(OSError):
                self.wal.remove_loaded(end)
        try:
            self._on_loaded(frames)
        except Exception:
            log.exception("after-load hook failed")
        return True

    def _apply(self, frames: list[FrameAt]) -> None:
        """Load `frames` and move `loaded_lsn` past them in ONE transaction, sent as one script.

        A trickle load is a few dozen logs, so what it costs is the number of statements (each
        costs DuckDB's client ~0.4 ms, an Arrow insert 2-3 ms, whatever the rows): the script
        holds only the inserts this batch needs and the `wal_state` update. Metric partials and
        service deltas are not computed here: the views aggregate the tail of `logs` on read and
        `fold_tail` moves it into the partial tables now and then (migration 015).
        """
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        db = self._connection()
        logs_parts = [f.frame.logs for f in frames if f.frame.logs is not None and f.frame.logs.num_rows]
        dead_parts = [f.frame.dead for f in frames if f.frame.dead is not None and f.frame.dead.num_rows]
        keys = [k for f in frames for k in f.frame.keys]
        # The script reads these local variables by name (DuckDB's replacement scan): cheaper
        # than a register/unregister pair, and nothing stays registered after the load.
        _load_logs = _load_dead = _load_keys = None
        script = ["BEGIN"]
        if logs_parts:
            # One chunk: DuckDB scans a table of many tiny chunks (one per group commit)
            # some 30 times slower than the same rows in one chunk (measured: 24 ms vs 0.8 ms).
            _load_logs = _one_chunk(logs_parts)
            script.append("INSERT INTO logs SELECT * FROM _load_logs")
        if dead_parts:
            _load_dead = _one_chunk(dead_parts)
            script.append("INSERT INTO dead_letter SELECT * FROM _load_dead")
        if keys:
            _load_keys = pa.table(
                {
                    "key": pa.array([k.key for k in keys], pa.string()),
                    "accepted": pa.array([k.accepted for k in keys], pa.int64()),
                    "rejected": pa.array([k.rejected for k in keys], pa.int64()),
                    "at": pa.array([k.received_us for k in keys], pa.timestamp("us")),
                }
            )
            script.append("INSERT INTO ingest_keys SELECT * FROM _load_keys")
        for f in frames:
            if f.frame.replayed_dead_ids:
                # Integers only (ids and a time from our own frame), so they are written inline.
                ids = ", ".join(str(int(i)) for i in f.frame.replayed_dead_ids)
                script.append(
                    f"UPDATE dead_letter SET replayed_at = make_timestamp({int(f.frame.replayed_at_us)}) "
                    f"WHERE id IN ({ids})"
                )
        # A big load folds the tail in the same transaction: one commit (and fsync) less than a
        # fold of its own right after it.
        folding = (
            _load_logs is not None
            and not self._inline_fold_failed
            and self._tail_logs + _load_logs.num_rows >= self.fold_logs
        )
        if folding:
            script += _FOLD_STATEMENTS
        script.append(f"UPDATE wal_state SET loaded_lsn = {int(frames[-1].end)} WHERE id = 1")
        script.append("COMMIT")
        try:
            db.execute(";\n".join(script))
        except BaseException:
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            # Whatever failed, the retry loads without the fold: a fold that cannot succeed must
            # never hold the logs back (`fold()` retries it on its own, and clears this flag).
            self._inline_fold_failed = self._inline_fold_failed or folding
            raise
        if folding:
            self._tail_logs = 0
            self._last_fold = time.monotonic()
        elif _load_logs is not None:
            self._tail_logs += _load_logs.num_rows
        del _load_logs, _load_dead, _load_keys

    # ---- the tail of logs not yet in the partial tables ------------------------------------------
    def fold_due(self) -> bool:
        """Whether the tail is big or old enough to be folded into the partial tables."""
        if self._tail_logs <= 0:
            return False
        return self._tail_logs >= self.fold_logs or time.monotonic() - self._last_fold >= self.fold_interval_s

    def fold(self) -> bool:
        """Fold the tail now (loader thread); True on success or nothing to do. Failures are retried later."""
        if self._tail_logs <= 0:
            return True
        self._last_fold = time.monotonic()
        try:
            fold_tail(self._connection())
        except Exception as exc:  # the views stay exact without it: retried at the next interval
            log.warning(
                "folding the log tail into the partials failed", extra={"error": f"{type(exc).__name__}: {exc}"}
            )
            with contextlib.suppress(Exception):
                self._on_failure()
            return False
        self._tail_logs = 0
        self._inline_fold_failed = False
        return True


def _one_chunk(parts: list[pa.Table]) -> pa.Table:
    table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    return table.combine_chunks() if table.column(0).num_chunks > 1 else table


# Every partial table and the view that aggregates the logs above `wal_state.aggregated_id` into
# its rows (migration 015): the SQL of `metrics.aggregate` and `registry.per_service` in one place.
_TAIL_VIEWS = (
    ("metrics_minute_part", "metrics_minute_tail"),
    ("latency_sketch_part", "latency_sketch_tail"),
    ("user_minute_part", "user_minute_tail"),
    ("services_part", "services_tail"),
)
_FOLD_STATEMENTS = (
    *(f"INSERT INTO {part} SELECT * FROM {tail}" for part, tail in _TAIL_VIEWS),
    # An uncorrelated bound, so DuckDB skips every row group below it by its min/max.
    "UPDATE wal_state SET aggregated_id = coalesce((SELECT max(id) FROM logs "
    "WHERE id > (SELECT aggregated_id FROM wal_state WHERE id = 1)), aggregated_id) WHERE id = 1",
)
_FOLD_SCRIPT = ";\n".join(["BEGIN", *_FOLD_STATEMENTS, "COMMIT"])


def fold_tail(db: duckdb.DuckDBPyConnection) -> None:
    """Append the partials of the logs above `aggregated_id` and move it past them, in one transaction.

    The views read partials plus tail, so readers see the same numbers before and after.
    """
    try:
        db.execute(_FOLD_SCRIPT)
    except BaseException:
        with contextlib.suppress(Exception):
            db.execute("ROLLBACK")
        raise


def compact_partials(db: duckdb.DuckDBPyConnection, before_us: int, since_us: int | None = None) -> int:
    """Merge the partial rows of each (service, minute[, key]) in [`since_us`, `before_us`) into one.

    Returns the number of metric keys compacted. Runs in one transaction, so readers see either
    the partials or their merge, never both. Its cost grows with the rows in the window (a whole
    week of 50 services took 4 s of CPU), hence `since_us`: see `Store._maintenance`.
    """
    merged = 0
    db.execute("BEGIN")
    try:
        cut = f"minute < make_timestamp({int(before_us)})"
        if since_us is not None:
            cut += f" AND minute >= make_timestamp({int(since_us)})"
        db.execute(
            "CREATE OR REPLACE TEMP TABLE _c_minute AS SELECT service, minute, sum(count)::BIGINT, sum(debug)::BIGINT, "
            "sum(info)::BIGINT, sum(warn)::BIGINT, sum(error)::BIGINT, sum(fatal)::BIGINT, sum(late)::BIGINT, "
            "sum(rt_count)::BIGINT, sum(rt_sum)::DOUBLE, min(rt_min), max(rt_max) FROM metrics_minute_part "
            f"WHERE {cut} GROUP BY service, minute HAVING count(*) > 1"
        )
        row = db.execute("SELECT count(*) FROM _c_minute").fetchone()
        merged += int(row[0]) if row else 0
        db.execute(
            "DELETE FROM metrics_minute_part p USING _c_minute c WHERE p.service = c.service AND p.minute = c.minute"
        )
        db.execute("INSERT INTO metrics_minute_part SELECT * FROM _c_minute")
        for table, key in (("latency_sketch_part", "bucket"), ("user_minute_part", "user_id")):
            db.execute(
                f"CREATE OR REPLACE TEMP TABLE _c_{table} AS SELECT service, minute, {key}, sum(count)::BIGINT "
                f"FROM {table} WHERE {cut} GROUP BY service, minute, {key} HAVING count(*) > 1"
            )
            db.execute(
                f"DELETE FROM {table} p USING _c_{table} c WHERE p.service = c.service AND p.minute = c.minute "
                f"AND p.{key} = c.{key}"
            )
            db.execute(f"INSERT INTO {table} SELECT * FROM _c_{table}")
        # services: one row per service, whatever its age (the registry has no time axis)
        db.execute(
            "CREATE OR REPLACE TEMP TABLE _c_services AS SELECT service, min(first_seen), max(last_seen), "
            "max(last_event_ts), sum(total)::BIGINT, sum(errors)::BIGINT FROM services_part "
            "GROUP BY service HAVING count(*) > 1"
        )
        db.execute("DELETE FROM services_part p USING _c_services c WHERE p.service = c.service")
        db.execute("INSERT INTO services_part SELECT * FROM _c_services")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            db.execute("ROLLBACK")
        raise
    return merged
