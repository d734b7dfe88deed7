"""Retention deletes exactly the expired raw rows; metrics buckets are kept longer."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ops_support import write_config

from loglens import store as store_mod
from loglens.config import load_settings
from loglens.schema import LogSchema, now_us, parse_values
from loglens.store import Store
from tests_support import REPO, LiveServer


def _iso_us(epoch_us: int) -> str:
    return (
        datetime.fromtimestamp(epoch_us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{epoch_us % 1_000_000:06d}Z"
    )


def test_apply_retention_deletes_exactly_the_rows_before_the_cutoff(tmp_path: Path) -> None:
    schema = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
    now_s = float(int(time.time()))
    cutoff = int((now_s - 86400) * 1_000_000)
    stamps = {"expired-1us": cutoff - 1, "at-cutoff": cutoff, "after-1us": cutoff + 1, "old": cutoff - 3_600_000_000}
    store = Store(tmp_path / "s.duckdb", retention_days=1, metrics_retention_days=30, retention_interval_s=3600)
    store.start()
    try:
        values = [{"timestamp": _iso_us(ts), "level": "INFO", "service": "r", "message": m} for m, ts in stamps.items()]
        batch = schema.validate(parse_values(values), "http", now_us())
        assert batch.table.num_rows == 4
        store.submit(batch.table, [], now_us()).result()
        minutes_before = store.query("SELECT count(*) FROM metrics_minute")[0][0]
        # run the step where the writer would: stop the writer thread first, keep its connection open
        store._queue.put(store_mod._STOP)
        store._thread.join()
        deleted = store.apply_retention(now_s, max_rows=1)  # one row per step: steps are bounded
        assert deleted == 1
        deleted += store.apply_retention(now_s, max_rows=10)
        assert deleted == 2
        assert store.apply_retention(now_s) == 0
        left = {r[0] for r in store.query("SELECT message FROM logs")}
        assert left == {"at-cutoff", "after-1us"}
        assert store.query("SELECT count(*) FROM metrics_minute")[0][0] == minutes_before
        # metrics go when older than their own (longer) retention
        store.apply_retention(now_s + 30 * 86400)
        assert store.query("SELECT count(*) FROM metrics_minute")[0][0] == 0
    finally:
        store._thread = None
        store.close()


def test_retention_in_a_running_server(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, "")
    config.write_text(
        config.read_text().replace(
            "storage:\n",
            "storage:\n  retention_days: 1\n  retention_interval_seconds: 0.2\n  metrics_retention_days: 30\n",
        )
    )
    srv = live_server_factory(load_settings(config))
    now = time.time()
    ages = {"two-days": 2 * 86400, "a-day-and-10-min": 86400 + 600, "a-day-less-10-min": 86400 - 600, "fresh": 0}
    logs = [
        {"timestamp": _iso_us(int((now - age) * 1e6)), "level": "INFO", "service": "ret", "message": f"{name}-{i}"}
        for name, age in ages.items()
        for i in range(10)
    ]
    with srv.client() as c:
        assert c.post("/api/v1/logs", json=logs).json()["accepted"] == 40
        deadline = time.monotonic() + 60
        while True:
            kept = {x["message"] for x in c.get("/api/v1/logs", params={"service": "ret", "limit": 100}).json()["logs"]}
            if len(kept) == 20 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert kept == {f"{n}-{i}" for n in ("a-day-less-10-min", "fresh") for i in range(10)}
        status = c.get("/api/v1/status").json()
        assert status["store"]["rows"]["logs"] == 20
        assert status["store"]["rows"]["metrics_minute"] == 4  # per-minute metrics of expired logs stay
        assert status["retention"]["logs_days"] == 1
