"""The store: acknowledge after a write-ahead log, load DuckDB behind it, read with MVCC cursors.

Write path (see docs/architecture.md, "How logs are stored"):

1. Ingest hands `submit()` a validated Arrow batch and its rejections and gets a Future.
2. The WAL writer thread drains everything queued into ONE frame (group commit): ids assigned,
   idempotency keys checked against the in-memory key set, appended to the current segment and
   fsynced (`wal.py`). Only then are the Futures resolved: the acknowledgement never waits for
   DuckDB.
3. Right after the fsync the batch goes, in memory, to the dispatcher thread, which computes
   the metric partials and calls the listeners (live detection, dashboard stream, self-metrics)
   and updates the in-memory service registry.
4. The loader thread (`loader.py`) moves durable frames into DuckDB in large transactions that
   also record the WAL position, so each frame lands exactly once across crashes.

Reads (`query`, `query_arrow`, `reader`) first wait — at most `read_wait_s` — until the loader
has loaded everything acknowledged before the read began, so a client reads its own writes.
"""

from __future__ import annotations

import asyncio
import collections
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
from loglens.models import LogRows, Rejection, rows_to_table
from loglens.store import registry
from loglens.store.loader import LOAD_LOGS, Loader, compact_partials, fold_tail
from loglens.store.wal import Frame, FrameAt, KeyRecord, Wal, encode_frame

log = logging.getLogger("loglens.store")

__all__ = ["CommitEvent", "CommitReceipt", "Store", "WalStatus", "wal_dir_for"]

# Dead letters as the WAL carries them (the dead_letter table's columns).
DEAD_ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("received_at", pa.timestamp("us")),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("replayed_at", pa.timestamp("us")),
    ]
)
_COMPACT_INTERVAL_S = 30.0
# Shortest gap between two deliveries to listeners under load. Each delivery has a fixed cost in
# the dispatcher (aggregation), the evaluator and the pattern miner, whatever its size: at 0.05 s
# it was 0.6 CPU-s per million logs more than at 0.2 s under bulk ingest (measured A/B, server
# threads), while a log reaches alerting and the dashboard at most 0.2 s later under load (the
# alert and push targets are p99 <= 1 s).
_DISPATCH_WINDOW_S = 0.2
_COMPACT_AGE_S = 120.0  # partials of minutes older than this are merged (late logs still append)
# Each compaction merges one hour of minutes just closed, and one older hour: a sweep walking back
# to the metrics retention and round again, for the partials late logs append to old minutes. A
# pass over every partial row costs seconds of CPU once there are weeks of them (measured: 4 s
# for a week of 50 services), and it would run every 30 s in the loader thread.
_COMPACT_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class CommitReceipt:
    """What the WAL made durable for one submitted batch."""

    accepted: int
    rejected: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class WalStatus:
    """The write-ahead log and its loader, for /metrics, /healthz and `loglens status`."""

    wal_bytes: int  # segment files on disk
    lag_bytes: int  # durable but not yet in DuckDB
    lag_seconds: float  # age of the oldest unloaded acknowledgement (0 when caught up)
    durable_lsn: int
    loaded_lsn: int
    replay_total_bytes: int  # backlog found at start
    replay_done_bytes: int
    loads: int
    load_failures: int
    loader_error: str | None
    drain_bytes_per_s: float

    @property
    def replay_progress(self) -> float:
        """0..1 of the start-up backlog loaded (1 when there was none)."""
        if self.replay_total_bytes <= 0:
            return 1.0
        return min(1.0, self.replay_done_bytes / self.replay_total_bytes)


@dataclass(slots=True)
class _Item:
    table: pa.Table | LogRows
    rejections: list[Rejection]
    received_us: int
    idempotency_key: str | None
    replayed_dead_ids: list[int] = field(default_factory=list)
    # A thread's caller waits on a concurrent Future; an event-loop caller gets an asyncio
    # future that the writer settles with one loop wake-up per group (see `_finish`).
    future: Future[CommitReceipt] | asyncio.Future[CommitReceipt] = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def size(self) -> int:
        return int(self.table.num_rows) + len(self.rejections)


_STOP = object()


def _take_waiting(
    q: queue.SimpleQueue[Any], items: list[Any], size: int = 0, cap: float = math.inf
) -> tuple[int, bool]:
    """Move what is already queued into `items` while `size` (logs, for items that have one) is
    under `cap`; returns the new size and whether the stop marker was met."""
    while size < cap:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is _STOP:
            return size, True
        items.append(nxt)
        size += getattr(nxt, "size", 0)
    return size, False


def _settle(settled: list[tuple[asyncio.Future[CommitReceipt], CommitReceipt | BaseException]]) -> None:
    """Resolve the asyncio futures of one group commit (runs on their event loop)."""
    for future, outcome in settled:
        if future.cancelled():  # the request was abandoned (client gone); its logs are durable anyway
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _group_tables(parts: list[pa.Table | LogRows]) -> list[pa.Table]:
    """The Arrow tables of a group commit, in request order; each run of row lists becomes one table."""
    tables: list[pa.Table] = []
    run: list[LogRows] = []
    for part in parts:
        if isinstance(part, LogRows):
            run.append(part)
            continue
        if run:
            tables.append(rows_to_table(run))
            run = []
        tables.append(part)
    if run:
        tables.append(rows_to_table(run))
    return tables


def wal_dir_for(db_path: Path, wal_dir: str | Path | None = None) -> Path:
    """Where the write-ahead log of the store at `db_path` lives (`<db>.wal.d` unless configured)."""
    return Path(wal_dir) if wal_dir else db_path.with_name(db_path.name + ".wal.d")


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
    """The write-ahead log plus the DuckDB database. `start()` opens both and starts the threads."""

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
        memory_limit: str = "128MB",
        max_idempotency_keys: int = 250_000,
        wal_dir: str | Path | None = None,
        wal_max_bytes: int = 1 << 30,
        wal_segment_bytes: int = 64 << 20,
        load_interval_s: float = 0.2,
        load_batch_logs: int = LOAD_LOGS,
        read_wait_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.max_queue_logs = max_queue_logs
        self.max_batch_logs = max_batch_logs
        self.retention_days = retention_days
        self.metrics_retention_days = metrics_retention_days
        self.retention_interval_s = retention_interval_s
        self.commit_window_s = commit_window_s
        self.memory_limit = memory_limit
        self.max_idempotency_keys = max_idempotency_keys
        self.wal_max_bytes = wal_max_bytes
        self.load_interval_s = load_interval_s
        self.load_batch_logs = load_batch_logs
        self.read_wait_s = read_wait_s
        self.wal = Wal(wal_dir_for(self.path, wal_dir), wal_segment_bytes)
        self.registry = registry.ServiceRegistry()
        self.listeners: list[Callable[[CommitEvent], None]] = []
        self.loader: Loader | None = None
        self._last_group_items = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # C queue: put() is on every request
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dispatch: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dispatch_thread: threading.Thread | None = None
        self._dispatch_cond = threading.Condition()
        self._dispatch_now = (
            threading.Event()
        )  # a reader waits for the listeners: deliver without waiting out the window
        self._dispatch_logs = 0  # logs handed to the dispatcher whose listeners have not finished
        self._dispatch_sent = 0  # batches handed to the dispatcher / fully delivered
        self._dispatch_done = 0
        self._db: duckdb.DuckDBPyConnection | None = None
        self._next_log_id = 1
        self._next_dead_id = 1
        # Idempotency keys acknowledged (loaded or still in the WAL) → arrival time (epoch µs), in
        # commit order; kept as long as raw logs (storage.retention_days) and at most the
        # `max_idempotency_keys` newest, so a client sending a new key with every request cannot
        # grow the server's memory without bound (the oldest are forgotten first: a retry comes
        # soon after its request).
        self._keys: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._keys_lock = threading.Lock()
        self._claimed_dead: set[int] = set()  # dead letters re-ingested by a replay not yet loaded
        self._replay_start = 0
        self._replay_end = 0
        # (frame end LSN, monotonic ack time) of frames not yet loaded, oldest first: the loader lag.
        self._unloaded_since: collections.deque[tuple[int, float]] = collections.deque()
        self._local = threading.local()
        self._last_retention = time.monotonic()  # first retention pass after one interval
        self._last_compaction = time.monotonic()
        self._sweep_before_us: int | None = None  # the older hour the next compaction merges ends here
        self.wal_error: str | None = None
        self.commits = 0
        self.reopens = 0  # times the loader reopened an invalidated database (see _reopen_if_invalidated)
        self.last_commit_seconds = 0.0
        self._wal_rate = 50e6  # bytes/s appended, EWMA (for Retry-After when the cap is hit)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Store:
        """Open the database and the WAL, replay what DuckDB lacks, start writer, dispatcher, loader."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(self.path), config=self._duckdb_config())
        except duckdb.Error as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from None
        self._migrate()
        loaded_lsn = int(self._one("SELECT loaded_lsn FROM wal_state WHERE id = 1"))
        try:
            scan = self.wal.open(loaded_lsn)
        except OSError as exc:
            raise StorageError(f"cannot open the write-ahead log in {self.wal.dir}: {exc}") from None
        if scan.torn_bytes:
            log.warning("dropped a torn WAL tail", extra={"bytes": scan.torn_bytes, "lsn": scan.end_lsn})
        self._next_log_id = max(int(self._one("SELECT coalesce(max(id), 0) FROM logs")), scan.max_log_id) + 1
        self._next_dead_id = max(int(self._one("SELECT coalesce(max(id), 0) FROM dead_letter")), scan.max_dead_id) + 1
        newest = self._db.execute(
            "SELECT key, epoch_us(committed_at) FROM ingest_keys ORDER BY committed_at DESC LIMIT ?",
            [self.max_idempotency_keys],
        ).fetchall()
        self._keys = collections.OrderedDict((str(r[0]), int(r[1])) for r in reversed(newest))
        self._keys.update((k.key, k.received_us) for k in scan.keys)
        self._forget_oldest_keys()
        self._claimed_dead = set(scan.replayed_dead_ids)
        self.registry.seed(
            [
                registry.ServiceInfo(s, int(a), int(b), int(c), int(n), int(e))
                for s, a, b, c, n, e in self._db.execute(
                    "SELECT service, epoch_us(first_seen), epoch_us(last_seen), epoch_us(last_event_ts), total, errors "
                    "FROM services"
                ).fetchall()
            ]
        )
        self._replay_start, self._replay_end = loaded_lsn, scan.end_lsn
        if scan.end_lsn > loaded_lsn:
            log.info(
                "replaying the write-ahead log into DuckDB",
                extra={"frames": scan.frames, "bytes": scan.end_lsn - loaded_lsn},
            )
            self._unloaded_since.append((scan.end_lsn, time.monotonic()))
        self.loader = Loader(
            self.wal,
            self._writer_connection,
            loaded_lsn,
            interval_s=self.load_interval_s,
            batch_logs=self.load_batch_logs,
            durable_lsn=lambda: self.wal.end_lsn,
            on_loaded=self._on_loaded,
            on_failure=self._reopen_if_invalidated,
            maintenance=self._maintenance,
        )
        self.loader.start()
        self._dispatch_thread = threading.Thread(target=self._dispatch_run, name="loglens-dispatch", daemon=True)
        self._dispatch_thread.start()
        self._thread = threading.Thread(target=self._run, name="loglens-wal-writer", daemon=True)
        self._thread.start()
        return self

    def _duckdb_config(self) -> dict[str, str | bool | int | float | list[str]]:
        """DuckDB's settings for this store's database."""
        return {
            "memory_limit": self.memory_limit,
            # DuckDB's allocator (jemalloc) otherwise hands freed pages back to the OS only after a
            # task whose peak passed `allocator_flush_threshold` (128 MB): below that a long-running
            # server kept 40-80 MB of freed pages resident (measured in the soak, docs/benchmarks.md).
            # A background thread purges them as they age.
            "allocator_background_threads": True,
        }

    def _one(self, sql: str) -> Any:
        assert self._db is not None
        row = self._db.execute(sql).fetchone()
        return row[0] if row else 0

    def _writer_connection(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise StorageError("store is closed")
        return self._db

    def _reopen_if_invalidated(self) -> None:
        """Reopen the database file when DuckDB invalidated the connection. Loader thread only.

        A fatal DuckDB error (e.g. an automatic checkpoint hitting a full disk) invalidates the
        database instance until it is reopened; without this the loader would fail forever after
        space returns. Reopening replays DuckDB's own WAL; the loader then resumes from the
        position recorded in DuckDB, so a batch whose commit was lost is loaded again, once.
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
            self._db = duckdb.connect(str(self.path), config=self._duckdb_config())
            lsn = int(self._one("SELECT loaded_lsn FROM wal_state WHERE id = 1"))
        except duckdb.Error as exc:
            log.error("store reopen failed", extra={"error": str(exc)})
            return
        if self.loader is not None:
            self.loader.loaded_lsn = lsn
        self.reopens += 1
        log.warning("store reopened after a fatal error", extra={"path": str(self.path)})

    def close(self) -> None:
        """Make everything queued durable, load it, checkpoint and close. Safe to call twice."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._dispatch_thread is not None:
            self._dispatch.put(_STOP)
            self._dispatch_thread.join()
            self._dispatch_thread = None
        if self.loader is not None:
            self.loader.stop(drain=True)
        self.wal.close()
        if self._db is not None:
            with contextlib.suppress(duckdb.Error):
                self._db.execute("CHECKPOINT")
            with contextlib.suppress(duckdb.Error):
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

    # ---- status ----------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Logs submitted and not yet durable in the WAL."""
        return self._pending

    @property
    def last_error(self) -> str | None:
        """Why the store is unhealthy: the last WAL write failed, or the loader cannot load."""
        if self.wal_error:
            return self.wal_error
        if self.loader is not None and self.loader.stats.last_error:
            return f"loader: {self.loader.stats.last_error}"
        return None

    def wal_status(self) -> WalStatus:
        """Sizes, lag and replay progress of the WAL and its loader."""
        loader = self.loader
        loaded = loader.loaded_lsn if loader else 0
        durable = self.wal.end_lsn
        oldest = next((t for end, t in list(self._unloaded_since) if end > loaded), None)
        return WalStatus(
            wal_bytes=self.wal.size_bytes(),
            lag_bytes=max(0, durable - loaded),
            lag_seconds=(time.monotonic() - oldest) if oldest is not None and durable > loaded else 0.0,
            durable_lsn=durable,
            loaded_lsn=loaded,
            replay_total_bytes=self._replay_end - self._replay_start,
            replay_done_bytes=max(0, min(loaded, self._replay_end) - self._replay_start),
            loads=loader.stats.loads if loader else 0,
            load_failures=loader.stats.failures if loader else 0,
            loader_error=loader.stats.last_error if loader else None,
            drain_bytes_per_s=loader.stats.drain_bytes_per_s if loader else 0.0,
        )

    def retry_after(self) -> int:
        """Seconds a client should wait: the WAL backlog over the cap at the loader's drain rate."""
        lag = self.loader.lag_bytes if self.loader else 0
        rate = self.loader.stats.drain_bytes_per_s if self.loader else 1.0
        excess = max(lag - 0.75 * self.wal_max_bytes, self._pending * 200)
        return max(1, min(300, math.ceil(excess / max(rate, 1.0))))

    # ---- write path ------------------------------------------------------------------------
    def submit(
        self,
        table: pa.Table | LogRows,
        rejections: list[Rejection],
        received_us: int,
        idempotency_key: str | None = None,
        replayed_dead_ids: list[int] | None = None,
    ) -> Future[CommitReceipt]:
        """Queue a validated batch; the Future resolves after its WAL fsync. Raises Backpressure.

        `replayed_dead_ids` marks dead letters this batch re-ingests: the mark travels in the
        same WAL frame as the logs, so a replay is applied entirely or not at all.
        """
        item = _Item(table, rejections, received_us, idempotency_key, list(replayed_dead_ids or []))
        self._enqueue(item)
        future = item.future
        assert isinstance(future, Future)
        return future

    def submit_async(
        self,
        table: pa.Table | LogRows,
        rejections: list[Rejection],
        received_us: int,
        idempotency_key: str | None = None,
    ) -> asyncio.Future[CommitReceipt]:
        """`submit()` for a caller on an event loop: an asyncio future, settled after the fsync.

        Wrapping a concurrent Future (`asyncio.wrap_future`) costs two extra callbacks and one
        loop wake-up per request; these futures are settled together, one wake-up per group
        commit, which matters when every request carries one log.
        """
        loop = asyncio.get_running_loop()
        item = _Item(table, rejections, received_us, idempotency_key, [], loop.create_future(), loop)
        self._enqueue(item)
        future = item.future
        assert isinstance(future, asyncio.Future)
        return future

    def _check_room(self) -> None:
        if self._thread is None:
            raise StorageError("store is not running")
        if self.loader is not None and self.loader.lag_bytes > self.wal_max_bytes:
            raise Backpressure(
                f"write-ahead log full ({self.loader.lag_bytes} bytes waiting for the loader)", self.retry_after()
            )

    def _enqueue(self, item: _Item) -> None:
        self._check_room()
        with self._pending_lock:
            if self._pending and self._pending + item.size > self.max_queue_logs:
                raise Backpressure(f"ingest queue full ({self._pending} logs waiting for commit)", self.retry_after())
            self._pending += item.size
        self._queue.put(item)

    def claim_dead_letters(self, ids: list[int]) -> list[int]:
        """Reserve dead letters for a replay; returns those no other replay holds. Release with release_dead_letters."""
        with self._pending_lock:
            free = [i for i in ids if i not in self._claimed_dead]
            self._claimed_dead.update(free)
        return free

    def release_dead_letters(self, ids: list[int]) -> None:
        """Give back claimed dead letters that were not re-ingested."""
        with self._pending_lock:
            self._claimed_dead.difference_update(ids)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            items = [first]
            size = first.size
            # Group commit: take everything already waiting, up to the batch cap. When the last
            # group had several requesters (many clients each waiting for their fsync), wait a
            # moment — at most the configured window, at most one commit's duration — so their
            # next requests share this fsync instead of paying for one each. A lone client
            # never waits.
            if self._last_group_items > 1 and size < self.max_batch_logs // 10:
                # Sleep through the window rather than wait on the queue: a waiting reader is
                # woken by every put (a context switch and a GIL hand-over per request), while
                # requests queued during a sleep cost their producers nothing.
                time.sleep(min(self.commit_window_s, max(0.0002, self.last_commit_seconds)))
            size, stop = _take_waiting(self._queue, items, size, self.max_batch_logs)
            self._last_group_items = len(items)
            self._wait_dispatch_room(size)
            self._commit_group(items)

    def _forget_oldest_keys(self) -> None:
        """Keep at most `max_idempotency_keys` keys, the newest (caller holds the keys lock or owns the store)."""
        while len(self._keys) > self.max_idempotency_keys:
            self._keys.popitem(last=False)

    def _wait_dispatch_room(self, size: int) -> None:
        # Listeners that fall behind hold back the next fsync (and so, through the queue, new
        # requests get 429) instead of letting in-memory batches pile up without bound.
        with self._dispatch_cond:
            while self._dispatch_logs and self._dispatch_logs + size > self.max_queue_logs:
                self._dispatch_cond.wait(0.5)

    def _commit_group(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        fresh: list[_Item] = []
        duplicates: set[int] = set()
        group_keys: dict[str, int] = {}
        for it in items:
            key = it.idempotency_key
            if key and (key in self._keys or key in group_keys):
                duplicates.add(id(it))
                continue
            fresh.append(it)
            if key:
                group_keys[key] = it.received_us
        tables = _group_tables([it.table for it in fresh if it.table.num_rows])
        logs: pa.Table | None = None
        if tables:
            logs = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            n = logs.num_rows
            logs = logs.add_column(
                0, "id", pa.array(np.arange(self._next_log_id, self._next_log_id + n, dtype=np.int64))
            )
        dead_rows = [(it.received_us, r) for it in fresh for r in it.rejections]
        replayed = [i for it in fresh for i in it.replayed_dead_ids]
        frame = Frame(
            logs,
            self._dead_table(dead_rows) if dead_rows else None,
            keys=[
                KeyRecord(it.idempotency_key, it.table.num_rows, len(it.rejections), it.received_us)
                for it in fresh
                if it.idempotency_key
            ],
            replayed_dead_ids=replayed,
            replayed_at_us=max((it.received_us for it in fresh if it.replayed_dead_ids), default=0),
            first_log_id=self._next_log_id,
            first_dead_id=self._next_dead_id,
        )
        data = encode_frame(frame) if (logs is not None or dead_rows or frame.keys or replayed) else b""
        try:
            if data:
                end = self.wal.append(data)
                self._unloaded_since.append((end, time.monotonic()))
        except OSError as exc:  # disk full, I/O error: nothing of this group is acknowledged
            self.wal_error = f"store write failed: {exc}"
            log.error("WAL append failed", extra={"error": self.wal_error, "logs": sum(i.size for i in items)})
            err = StorageError(self.wal_error, retry_after=5)
            self._finish(items, [err] * len(items))
            return
        self.wal_error = None
        self._next_log_id += frame.n_logs
        self._next_dead_id += frame.n_dead
        if group_keys:
            with self._keys_lock:
                self._keys.update(group_keys)
                self._forget_oldest_keys()
        elapsed = time.perf_counter() - started
        self.commits += 1
        self.last_commit_seconds = elapsed
        if elapsed > 0 and len(data) > 1 << 20:
            self._wal_rate = 0.8 * self._wal_rate + 0.2 * (len(data) / elapsed)

        receipts: list[CommitReceipt | BaseException] = []
        for it in items:
            dup = id(it) in duplicates
            receipts.append(CommitReceipt(0 if dup else it.table.num_rows, 0 if dup else len(it.rejections), dup))
        self._finish(items, receipts)
        if self.loader is not None and data:
            self.loader.notify_durable(frame.n_logs)
        if logs is not None or dead_rows:
            with self._dispatch_cond:
                self._dispatch_logs += frame.n_logs
                self._dispatch_sent += 1
            self._dispatch.put((logs, len(dead_rows), int(time.time() * 1e6), elapsed))

    def _dead_table(self, dead: list[tuple[int, Rejection]]) -> pa.Table:
        n = len(dead)
        return pa.Table.from_arrays(
            [
                pa.array(range(self._next_dead_id, self._next_dead_id + n), pa.int64()),
                pa.array([d[0] for d in dead], pa.int64()).cast(pa.timestamp("us")),
                pa.array([d[1].source for d in dead], pa.string()),
                pa.array([d[1].reason for d in dead], pa.string()),
                pa.array([d[1].raw for d in dead], pa.string()),
                pa.nulls(n, pa.timestamp("us")),
            ],
            schema=DEAD_ARROW_SCHEMA,
        )

    def _finish(self, items: list[_Item], outcomes: list[CommitReceipt | BaseException]) -> None:
        with self._pending_lock:
            self._pending -= sum(it.size for it in items)
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[CommitReceipt], Any]]] = {}
        for it, outcome in zip(items, outcomes, strict=True):
            future = it.future
            if isinstance(future, Future):
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled by its waiter; the logs are durable all the same
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            elif it.loop is not None:
                on_loops.setdefault(it.loop, []).append((future, outcome))
        for loop, settled in on_loops.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)

    # ---- downstream (dispatcher thread) -------------------------------------------------------
    def _dispatch_run(self) -> None:
        # Batches are coalesced: at most one delivery per _DISPATCH_WINDOW_S under load, so the
        # fixed cost of aggregating a batch and of every listener (about 2 ms, whatever the
        # batch size) is paid 5 times a second rather than once per group commit. A batch that
        # arrives after a quiet spell is delivered at once.
        last = 0.0
        stop = False
        while not stop:
            first = self._dispatch.get()
            if first is _STOP:
                return
            items = [first]
            remaining = last + _DISPATCH_WINDOW_S - time.monotonic()
            if remaining > 0:
                # Batches arriving meanwhile queue up without waking this thread; only a reader
                # waiting for the listeners (`wait_delivered`) cuts the window short.
                self._dispatch_now.wait(remaining)
            self._dispatch_now.clear()
            _, stop = _take_waiting(self._dispatch, items)
            last = time.monotonic()
            tables = [i[0] for i in items if i[0] is not None]
            n_logs = sum(t.num_rows for t in tables)
            try:
                logs = (pa.concat_tables(tables) if len(tables) > 1 else tables[0]) if tables else None
                self._deliver(logs, sum(i[1] for i in items), items[-1][2], tuple(i[3] for i in items))
            finally:
                with self._dispatch_cond:
                    self._dispatch_logs -= n_logs
                    self._dispatch_done += len(items)
                    self._dispatch_cond.notify_all()

    def _deliver(self, logs: pa.Table | None, n_dead: int, at_us: int, commit_seconds: tuple[float, ...]) -> None:
        partials = metrics.Partials.empty()
        if logs is not None:
            try:
                plain = logs.drop_columns(["id"])
                self.registry.add(registry.per_service(plain))
                if self.listeners:
                    partials = metrics.aggregate(plain)
            except Exception:
                log.exception("in-memory aggregation failed")
        if not self.listeners:
            return
        event = CommitEvent(logs if logs is not None else pa.table({}), partials, n_dead, at_us, commit_seconds)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must never break the write path
                log.exception("commit listener failed")

    # ---- loader callbacks (loader thread) ------------------------------------------------------
    def _on_loaded(self, frames: list[FrameAt]) -> None:
        end = frames[-1].end
        while self._unloaded_since and self._unloaded_since[0][0] <= end:
            self._unloaded_since.popleft()
        replayed = [i for f in frames for i in f.frame.replayed_dead_ids]
        if replayed:
            self.release_dead_letters(replayed)  # DuckDB now has their replayed_at
        # Frames written before this start were never folded into the in-memory registry.
        old = [f.frame.logs for f in frames if f.lsn < self._replay_end and f.frame.logs is not None]
        if old:
            self.registry.add(registry.per_service(pa.concat_tables(old)))

    # ---- maintenance (loader thread, between loads) --------------------------------------------
    def _maintenance(self) -> None:
        """Retention in small steps and compaction of metric partials, when due."""
        now = time.monotonic()
        if self._db is None:
            return
        try:
            if now - self._last_retention > self.retention_interval_s:
                self._last_retention = now
                started = time.monotonic()
                # A full step means more may be expired (e.g. after retention_days was lowered):
                # keep stepping for at most a second, so loads never wait long behind it.
                while self.apply_retention(time.time(), max_rows=50_000) >= 50_000 and time.monotonic() - started < 1.0:
                    pass
            if now - self._last_compaction > _COMPACT_INTERVAL_S:
                self._last_compaction = now
                self._compact_step(time.time())
        except duckdb.Error as exc:
            log.warning("store maintenance step failed", extra={"error": str(exc)})
            self._reopen_if_invalidated()

    def _compact_step(self, now_s: float) -> None:
        """Merge the hour of minutes just closed and one older hour of the sweep (see _COMPACT_WINDOW_S)."""
        window = int(_COMPACT_WINDOW_S * 1e6)
        cut = int((now_s - _COMPACT_AGE_S) * 1e6)
        self.compact(cut, since_us=cut - window)
        floor = int((now_s - self.metrics_retention_days * 86400) * 1e6)
        sweep = self._sweep_before_us
        if sweep is None or sweep <= floor or sweep > cut - window:
            sweep = cut - window
        assert self._db is not None
        cur = self._db.cursor()
        try:
            compact_partials(cur, sweep, since_us=sweep - window)
        finally:
            cur.close()
        self._sweep_before_us = sweep - window

    def compact(self, before_us: int, since_us: int | None = None) -> int:
        """Fold the log tail into the partials, merge those of minutes in [since_us, before_us); keys merged."""
        if self._db is None:
            raise StorageError("store is closed")
        cur = self._db.cursor()
        try:
            fold_tail(cur)
            return compact_partials(cur, before_us, since_us)
        finally:
            cur.close()

    def apply_retention(self, now_s: float, max_rows: int = 50_000) -> int:
        """One retention step at wall time `now_s`; returns raw log rows deleted."""
        if self._db is None:
            raise StorageError("store is closed")
        db = self._db.cursor()
        try:
            log_cutoff = int((now_s - self.retention_days * 86400) * 1e6)
            metric_cutoff = int((now_s - self.metrics_retention_days * 86400) * 1e6)
            fold_tail(db)  # retention acts on the partials: first the loaded tail goes into them
            # Only logs already folded into the partials: the tail is what the metric views read.
            deleted = db.execute(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts < make_timestamp(?) "
                "AND id <= (SELECT aggregated_id FROM wal_state WHERE id = 1) LIMIT ?)",
                [log_cutoff, max_rows],
            ).fetchone()
            db.execute("DELETE FROM dead_letter WHERE received_at < make_timestamp(?)", [log_cutoff])
            db.execute("DELETE FROM ingest_keys WHERE committed_at < make_timestamp(?)", [log_cutoff])
            with self._keys_lock:
                # oldest first: stop at the first key still inside the retention
                while self._keys and next(iter(self._keys.values())) < log_cutoff:
                    self._keys.popitem(last=False)
            for table in ("metrics_minute_part", "latency_sketch_part", "user_minute_part"):
                db.execute(f"DELETE FROM {table} WHERE minute < make_timestamp(?)", [metric_cutoff])
            # A service silent for longer than raw logs are kept has nothing left to show: it
            # leaves the registry and its table, so a flood of one-off names does not stay
            # forever (and is not mistaken for silent services after a restart).
            db.execute(
                "DELETE FROM services_part WHERE service IN (SELECT service FROM services_part "
                "GROUP BY service HAVING max(last_seen) < make_timestamp(?))",
                [log_cutoff],
            )
            self.registry.forget_idle(log_cutoff)
            return int(deleted[0]) if deleted else 0
        finally:
            db.close()

    # ---- read path -------------------------------------------------------------------------
    def sync(self, timeout: float | None = None) -> bool:
        """Wait until DuckDB holds everything acknowledged so far (at most `timeout`, default read_wait_s).

        While the backlog found at start is being replayed, reads do not wait (they would only
        time out): they see the store as far as it is loaded, and /healthz, /metrics and
        `loglens status` report the replay progress.
        """
        if self.loader is None:
            return True
        if timeout is None and self.loader.loaded_lsn < self._replay_end:
            return False
        target = self.wal.end_lsn
        if self.loader.loaded_lsn >= target:
            return True
        return self.loader.wait_loaded(target, self.read_wait_s if timeout is None else timeout)

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for the calling thread that sees every write acknowledged before the call."""
        if self._db is None:
            raise StorageError("store is closed")
        self.sync()
        cur = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "db", None) is not self._db:
            cur = self._db.cursor()
            self._local.cursor = cur
            self._local.db = self._db
        yield cur

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection to this database for a component's own tables (alerts, outbox, ...).

        DuckDB serialises conflicting writes itself; the loader stays the only writer of the
        log, metric and dead-letter tables. The connection follows the store when it reopens
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

    def services(self) -> list[registry.ServiceInfo]:
        """The in-memory service registry, including every batch acknowledged before the call."""
        self.wait_delivered()
        return self.registry.snapshot()

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Wait until the listeners have every batch acknowledged before the call (at most
        `timeout`, default read_wait_s); the dispatcher delivers at once instead of at the end
        of its window. False on timeout."""
        deadline = time.monotonic() + (self.read_wait_s if timeout is None else timeout)
        with self._dispatch_cond:
            target = self._dispatch_sent
            while self._dispatch_done < target:
                self._dispatch_now.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._dispatch_cond.wait(min(remaining, 0.05))
        return True

    def size_bytes(self) -> int:
        """Size of the database file, DuckDB's WAL and loglens's WAL segments on disk."""
        total = self.wal.size_bytes()
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total
