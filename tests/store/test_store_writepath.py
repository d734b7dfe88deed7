"""The store's write path on real files: acknowledgement after the WAL, loader, keys, caps, partials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from loglens.errors import Backpressure
from loglens.models import Rejection
from loglens.schema import LogSchema, now_us, parse_values
from loglens.store import CommitEvent, Store

REPO = Path(__file__).resolve().parents[2]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")


def _table(n: int, tag: str, service: str = "svc", ts: float | None = None) -> Any:
    vals = [
        {
            "timestamp": ts or time.time(),
            "level": "ERROR" if i % 4 == 0 else "INFO",
            "service": service,
            "message": f"{tag} {i}",
            "response_time_ms": 10.0 + i,
            "user_id": f"u{i % 3}",
        }
        for i in range(n)
    ]
    return SCHEMA.validate(parse_values(vals), "test", now_us()).table


def _wait(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_acknowledged_logs_reach_duckdb_by_themselves_and_reads_see_them_at_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert store.submit(_table(5, "fresh"), [], now_us()).result().accepted == 5
        # a read right after the acknowledgement sees the logs (it waits for the loader)
        assert store.query("SELECT count(*) FROM logs")[0][0] == 5
        assert store.submit(_table(3, "later"), [], now_us()).result().accepted == 3
        # without any reader asking, the loader moves the batch within its interval
        cur = store.cursor()
        try:
            _wait(lambda: cur.execute("SELECT count(*) FROM logs").fetchone()[0] == 8)
        finally:
            cur.close()
        # the loader records its position right after its COMMIT
        status = _wait(lambda: (st := store.wal_status()).lag_bytes == 0 and st)
        assert status.loaded_lsn == status.durable_lsn and status.loads >= 1


def test_commit_event_fires_after_the_fsync_before_duckdb(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    with Store(tmp_path / "s.duckdb", load_interval_s=60) as store:
        assert store.loader is not None

        def listener(event: CommitEvent) -> None:
            seen.append((event.logs.num_rows, int(event.partials.minute["count"].to_pylist()[0])))

        store.listeners.append(listener)
        store.submit(_table(4, "ev"), [], now_us()).result()
        _wait(lambda: seen)
        assert seen == [(4, 4)]
        assert store.loader.loaded_lsn < store.wal.end_lsn  # DuckDB does not have them yet
        assert [s.total for s in store.services()] == [4]  # the registry does


def test_event_loop_callers_are_answered_after_the_fsync_and_may_give_up_safely(tmp_path: Path) -> None:
    """An abandoned request (its client went away) is still stored, and the writer keeps serving."""

    async def scenario(store: Store) -> list[int]:
        abandoned = store.submit_async(_table(2, "gone"), [], now_us())
        abandoned.cancel()
        kept = [store.submit_async(_table(1, f"c{i}"), [], now_us()) for i in range(5)]
        receipts = await asyncio.wait_for(asyncio.gather(*kept), timeout=60)
        # a thread's caller of the same store is answered too, the old cancelled one notwithstanding
        cancelled = store.submit(_table(1, "thread-gone"), [], now_us())
        cancelled.cancel()
        after = await asyncio.wait_for(asyncio.wrap_future(store.submit(_table(3, "after"), [], now_us())), 60)
        return [r.accepted for r in receipts] + [after.accepted]

    with Store(tmp_path / "s.duckdb") as store:
        assert asyncio.run(scenario(store)) == [1, 1, 1, 1, 1, 3]
        # cancelling only stops the wait: every batch was written to the WAL and is loaded
        assert store.query("SELECT count(*) FROM logs")[0][0] == 2 + 5 + 1 + 3


def test_idempotency_keys_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        assert store.submit(_table(3, "k"), [], now_us(), "key-1").result().accepted == 3
        dup = store.submit(_table(3, "k"), [], now_us(), "key-1").result()
        assert dup.duplicate and dup.accepted == 0
    with Store(path) as store:
        again = store.submit(_table(3, "k"), [], now_us(), "key-1").result()
        assert again.duplicate and again.accepted == 0
        assert store.query("SELECT count(*) FROM logs")[0][0] == 3
        assert store.query("SELECT accepted FROM ingest_keys WHERE key = 'key-1'") == [(3,)]


def test_only_the_newest_idempotency_keys_are_remembered_also_after_a_restart(tmp_path: Path) -> None:
    """A client sending a new key with every request cannot grow the server's memory without bound."""
    path = tmp_path / "s.duckdb"

    def stored(store: Store, key: str) -> bool:
        return not store.submit(_table(1, key), [], now_us(), key).result().duplicate

    with Store(path, max_idempotency_keys=3) as store:
        assert all(stored(store, f"k{i}") for i in range(5))
        assert store.query("SELECT count(*) FROM ingest_keys")[0][0] == 5  # all are in the table
        assert not stored(store, "k4") and not stored(store, "k2")  # the three newest are known
        assert stored(store, "k1")  # an older one was forgotten: its retry is stored again
    with Store(path, max_idempotency_keys=3) as store:
        # after a restart the newest three of the table are remembered: k1 (again), k4, k3
        assert not stored(store, "k1") and not stored(store, "k4") and not stored(store, "k3")
        assert stored(store, "k0")


def test_a_failing_loader_keeps_the_wal_and_retries(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb", load_interval_s=0.05) as store:
        assert store.loader is not None
        store.loader.fail_next = duckdb.IOException("injected I/O error")
        assert store.submit(_table(10, "f"), [], now_us()).result().accepted == 10  # acknowledged anyway
        _wait(lambda: store.loader is not None and store.loader.stats.failures == 1)
        _wait(lambda: store.wal_status().lag_bytes == 0)
        assert store.last_error is None
        assert store.query("SELECT count(*), count(DISTINCT id) FROM logs") == [(10, 10)]
        assert store.query("SELECT sum(count) FROM metrics_minute") == [(10,)]


def test_wal_cap_answers_backpressure_with_a_retry_after(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb", wal_max_bytes=1, load_interval_s=60) as store:
        store.submit(_table(10, "a"), [], now_us()).result()
        with pytest.raises(Backpressure) as err:
            store.submit(_table(10, "b"), [], now_us())
        assert err.value.retry_after >= 1 and "write-ahead log full" in str(err.value)
        assert store.sync(30)  # the loader drains it ...
        assert store.submit(_table(10, "c"), [], now_us()).result().accepted == 10  # ... and writes resume


def test_dead_letters_and_partials_are_loaded_and_compacted(tmp_path: Path) -> None:
    minute = (time.time() // 60 - 10) * 60 + 5
    with Store(tmp_path / "s.duckdb") as store:
        for i in range(3):
            store.submit(_table(4, f"p{i}", ts=minute), [Rejection(0, "bad", "{}", "test")], now_us()).result()
            assert store.sync(30)
            # a load stores the logs only: the views aggregate that tail on read ...
            assert store.query("SELECT count, error, rt_count FROM metrics_minute") == [
                (4 * (i + 1), i + 1, 4 * (i + 1))
            ]
            assert store.query("SELECT total, errors FROM services") == [(4 * (i + 1), i + 1)]
            assert store.compact(0) == 0  # ... until it is folded into the partials (nothing to merge before 0)
        parts = store.query("SELECT count(*) FROM metrics_minute_part")[0][0]
        assert parts == 3
        assert store.query("SELECT count, error, rt_count FROM metrics_minute") == [(12, 3, 12)]
        assert store.query("SELECT count(*) FROM dead_letter")[0][0] == 3
        sketch_before = store.query("SELECT bucket, count FROM latency_sketch ORDER BY bucket")
        users_before = store.query("SELECT user_id, count FROM user_minute ORDER BY user_id")
        assert store.compact(now_us()) == 1
        assert store.query("SELECT count(*) FROM metrics_minute_part")[0][0] == 1
        assert store.query("SELECT count, error, rt_count FROM metrics_minute") == [(12, 3, 12)]
        assert store.query("SELECT bucket, count FROM latency_sketch ORDER BY bucket") == sketch_before
        assert store.query("SELECT user_id, count FROM user_minute ORDER BY user_id") == users_before
        assert store.query("SELECT count(*) FROM user_minute_part")[0][0] == 3
        assert store.compact(now_us()) == 0  # nothing left to merge
        assert store.query("SELECT count(*) FROM services_part")[0][0] == 1  # three deltas merged into one
        assert store.query("SELECT total, errors FROM services") == [(12, 3)]


def test_services_registry_is_seeded_from_the_table_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.submit(_table(4, "a", service="alpha"), [], now_us()).result()
        store.submit(_table(2, "b", service="beta"), [], now_us()).result()
    with Store(path) as store:
        assert [(s.service, s.total, s.errors) for s in store.services()] == [("alpha", 4, 1), ("beta", 2, 1)]
        store.submit(_table(4, "c", service="alpha"), [], now_us()).result()
        assert store.query("SELECT total FROM services WHERE service = 'alpha'") == [(8,)]
        assert [s.total for s in store.services()] == [8, 2]


def test_dead_letter_replay_is_one_wal_frame_applied_once_even_across_a_crash(tmp_path: Path) -> None:
    from loglens.ingest.pipeline import IngestPipeline
    from loglens.ingest.replay import replay

    path = tmp_path / "s.duckdb"
    good = '{"timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "service": "dl", "message": "fixed"}'
    with Store(path) as store:
        rejections = [Rejection(0, "was bad", good, "test"), Rejection(1, "bad", "not json", "test")]
        store.submit(SCHEMA.validate(parse_values([]), "test", now_us()).table, rejections, now_us()).result()
        assert store.sync(30)
    store = Store(path, load_interval_s=60).start()
    pipeline = IngestPipeline(SCHEMA, store)
    result = replay(pipeline)
    assert (result.matched, result.replayed, result.skipped) == (2, 1, 1)
    assert store.claim_dead_letters(result.replayed_ids) == []  # a concurrent replay cannot take it again
    assert store.loader is not None
    store.loader.stop(drain=False)  # "crash": the replay frame is durable in the WAL only
    store.close()
    raw = duckdb.connect(str(path))
    try:
        assert raw.execute("SELECT count(*) FROM logs").fetchone() == (0,)
        assert raw.execute("SELECT count(*) FROM dead_letter WHERE replayed_at IS NOT NULL").fetchone() == (0,)
    finally:
        raw.close()
    with Store(path) as reopened:
        assert reopened.wal_status().replay_total_bytes > 0
        assert reopened.sync(30)  # reads do not wait for a start-up replay by themselves
        assert reopened.wal_status().replay_progress == 1.0
        assert reopened.query("SELECT count(*) FROM logs WHERE message = 'fixed'")[0][0] == 1
        assert reopened.query("SELECT count(*) FROM dead_letter WHERE replayed_at IS NOT NULL")[0][0] == 1
        again = replay(IngestPipeline(SCHEMA, reopened))
        assert again.replayed == 0 and again.skipped == 1
        assert reopened.query("SELECT count(*) FROM logs")[0][0] == 1


def test_idempotency_keys_are_forgotten_with_the_logs_after_the_retention(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb", retention_days=1) as store:
        old_us = now_us() - 2 * 86400 * 1_000_000
        store.submit(_table(2, "old"), [], old_us, "old-key").result()
        store.submit(_table(2, "new"), [], now_us(), "new-key").result()
        assert store.sync(30)
        store.apply_retention(time.time())
        assert store.query("SELECT key FROM ingest_keys") == [("new-key",)]
        assert not store.submit(_table(2, "old"), [], now_us(), "old-key").result().duplicate
        assert store.submit(_table(2, "new"), [], now_us(), "new-key").result().duplicate


def test_services_silent_longer_than_the_retention_leave_registry_and_table(tmp_path: Path) -> None:
    day_us = 86400 * 1_000_000
    with Store(tmp_path / "s.duckdb", retention_days=1) as store:
        store.submit(_table(2, "gone", service="one-off"), [], now_us()).result()
        # a service still talking two days later (its logs arrive then)
        later = [{"timestamp": time.time(), "level": "INFO", "service": "steady", "message": "m"}]
        batch = SCHEMA.validate(parse_values(later), "test", now_us() + 2 * day_us).table
        store.submit(batch, [], now_us() + 2 * day_us).result()
        assert store.sync(30)
        assert {s.service for s in store.services()} == {"one-off", "steady"}
        store.apply_retention(time.time() + 2.5 * 86400)  # one-off's last arrival is 2.5 days old
        assert {s.service for s in store.services()} == {"steady"}
        assert store.query("SELECT service FROM services") == [("steady",)]
        # a name that comes back is simply new again
        store.submit(_table(1, "back", service="one-off"), [], now_us()).result()
        assert {s.service for s in store.services()} == {"one-off", "steady"}


def test_compaction_merges_the_hour_just_closed_then_sweeps_older_hours(tmp_path: Path) -> None:
    now = time.time()
    recent, old = (now // 60 - 30) * 60 + 5, (now // 60 - 180) * 60 + 5  # 30 minutes and 3 hours ago
    with Store(tmp_path / "s.duckdb") as store:
        for i in range(2):  # two loads, each folded: two partial rows per minute
            store.submit(_table(3, f"r{i}", ts=recent), [], now_us()).result()
            store.submit(_table(3, f"o{i}", ts=old), [], now_us()).result()
            assert store.sync(30)
            store.compact(0)

        def parts(minute_s: float) -> int:
            return int(
                store.query(
                    "SELECT count(*) FROM metrics_minute_part WHERE minute = make_timestamp(?)",
                    [int(minute_s // 60 * 60 * 1_000_000)],
                )[0][0]
            )

        assert (parts(recent), parts(old)) == (2, 2)
        store._compact_step(now)  # the last hour at once ...
        assert (parts(recent), parts(old)) == (1, 2)
        for _ in range(3):  # ... older hours one per step
            store._compact_step(now)
        assert (parts(recent), parts(old)) == (1, 1)
        assert store.query("SELECT sum(count) FROM metrics_minute")[0][0] == 12
