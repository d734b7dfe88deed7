"""The log tail (loaded, not yet folded into the partials) is aggregated on read exactly as `metrics.aggregate`."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.schema import LogSchema, now_us, parse_values
from loglens.store import Store, registry

REPO = Path(__file__).resolve().parents[2]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")


def _logs(n: int, seed: int) -> pa.Table:
    rnd = random.Random(seed)
    t0 = (time.time() // 60 - 5) * 60
    values: list[dict[str, Any]] = []
    for _ in range(n):
        v: dict[str, Any] = {
            "timestamp": t0 + rnd.uniform(0, 240),
            "level": rnd.choice(["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]),
            "service": rnd.choice(["a", "b", "c"]),
            "message": "m",
        }
        if rnd.random() < 0.8:  # bucket edges too: zero, below the smallest bucket, exact powers
            v["response_time_ms"] = rnd.choice([0.0, 0.0004, 0.001, 1.0, 100.0, rnd.uniform(0, 3000)])
        if rnd.random() < 0.7:
            v["user_id"] = rnd.choice(["u1", "u2", "u3"])
        values.append(v)
    return SCHEMA.validate(parse_values(values), "test", now_us()).table


def _views(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "minute": store.query(
            "SELECT service, epoch_us(minute), count, debug, info, warn, error, fatal, late, rt_count, "
            "round(rt_sum, 6), rt_min, rt_max FROM metrics_minute ORDER BY 1, 2"
        ),
        "sketch": store.query("SELECT service, epoch_us(minute), bucket, count FROM latency_sketch ORDER BY 1, 2, 3"),
        "users": store.query("SELECT service, epoch_us(minute), user_id, count FROM user_minute ORDER BY 1, 2, 3"),
        "services": store.query(
            "SELECT service, epoch_us(first_seen), epoch_us(last_seen), epoch_us(last_event_ts), total, errors "
            "FROM services ORDER BY 1"
        ),
    }


def _expected(logs: pa.Table) -> dict[str, list[tuple[Any, ...]]]:
    p = metrics.aggregate(logs)

    def rows(t: pa.Table, round_col: str | None = None) -> list[tuple[Any, ...]]:
        t = t.set_column(1, "minute", pc.cast(t["minute"], pa.int64()))  # epoch µs, as epoch_us() in SQL
        out = []
        for r in t.to_pylist():
            if round_col:  # DuckDB and Acero add floats in their own order
                r[round_col] = round(r[round_col], 6)
            out.append(tuple(r.values()))
        return sorted(out)

    services = sorted(
        (s.service, s.first_seen_us, s.last_seen_us, s.last_event_us, s.total, s.errors)
        for s in registry.per_service(logs)
    )
    return {
        "minute": rows(p.minute, "rt_sum"),
        "sketch": rows(p.sketch),
        "users": rows(p.users),
        "services": services,
    }


def test_views_over_the_tail_and_after_the_fold_equal_the_python_aggregates(tmp_path: Path) -> None:
    batches = [_logs(300, 1), _logs(5, 2), _logs(700, 3)]
    with Store(tmp_path / "s.duckdb") as store:
        assert store.loader is not None
        store.loader.fold_interval_s = 3600  # no fold by time during the test, however slow the machine
        for b in batches:
            store.submit(b, [], now_us()).result()
        stored = store.query_arrow(
            "SELECT ts, received_at, level, service, message, user_id, ip_address, response_time_ms, trace_id, "
            "metadata, late, source FROM logs ORDER BY id"
        )
        expected = _expected(stored)
        assert store.query("SELECT count(*) FROM metrics_minute_part")[0][0] == 0  # all of it is tail
        assert _views(store) == expected
        store.compact(0)  # fold the tail into the partials
        assert store.query("SELECT count(*) FROM logs WHERE id > (SELECT aggregated_id FROM wal_state)")[0][0] == 0
        assert _views(store) == expected
        more = _logs(50, 4)
        store.submit(more, [], now_us()).result()
        stored = store.query_arrow(
            "SELECT ts, received_at, level, service, message, user_id, ip_address, response_time_ms, trace_id, "
            "metadata, late, source FROM logs ORDER BY id"
        )
        assert _views(store) == _expected(stored)  # partials plus a new tail


def test_a_load_of_fold_logs_or_more_folds_the_tail_in_its_own_transaction(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert store.loader is not None
        store.loader.fold_logs = 100  # the default is 50,000: a bulk load
        store.loader.fold_interval_s = 3600
        store.submit(_logs(40, 5), [], now_us()).result()
        assert store.sync(30)
        assert store.query("SELECT count(*) FROM metrics_minute_part")[0][0] == 0  # small: stays tail
        store.submit(_logs(150, 6), [], now_us()).result()
        assert store.sync(30)
        # folded with the load: no tail left, and the views equal the logs
        assert store.query("SELECT count(*) FROM logs WHERE id > (SELECT aggregated_id FROM wal_state)")[0][0] == 0
        assert store.query("SELECT count(*) FROM metrics_minute_part")[0][0] > 0
        stored = store.query_arrow(
            "SELECT ts, received_at, level, service, message, user_id, ip_address, response_time_ms, trace_id, "
            "metadata, late, source FROM logs ORDER BY id"
        )
        assert _views(store) == _expected(stored)
