"""Full disk: a real 8 MB tmpfs holds the store; a ballast file fills it, deleting it frees it.

A write failure must answer 503 with Retry-After (never 200, never a hang), raise the critical
meta-alert (rule "meta", service "store"), report the error on /healthz, and recover by itself
when space returns — including after DuckDB invalidated its database because a checkpoint hit
the full disk (the Store then reopens the file).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn  # noqa: F401 - the live server fixtures need it

from loglens.ops.storewatch import META_NAME, StoreWatch
from loglens.schema import LogSchema, now_us, parse_values
from loglens.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs mounted in tmp_path (needs root, as in this project's environment)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Write a ballast file that leaves at most `leave_bytes` free on `disk`."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
            while not leave_bytes:  # top it up until the kernel says no
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


def _logs(n: int, tag: str) -> bytes:
    now = time.time()
    return b"\n".join(
        orjson.dumps(
            {
                "timestamp": now,
                "level": "ERROR" if i % 5 == 0 else "INFO",
                "service": f"s{i % 3}",
                "message": f"{tag} {i} " + os.urandom(64).hex(),
                "trace_id": f"{tag}-{i}",
            }
        )
        for i in range(n)
    )


def _wait(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _meta_alert(state: Any) -> Any:
    return next((a for a in state.engine.active() if a.rule == "meta" and a.service == META_NAME), None)


def test_full_disk_answers_503_raises_meta_alert_and_recovers(
    small_disk: Path, settings_factory: Callable[..., Any], live_server_factory: Callable[..., Any]
) -> None:
    settings = settings_factory()
    settings = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"path": small_disk / "store" / "loglens.duckdb"})}
    )
    server = live_server_factory(settings)
    headers = {"content-type": "application/x-ndjson"}
    with server.client() as client:
        assert client.post("/api/v1/logs", content=_logs(50, "before"), headers=headers).status_code == 200
        ballast = fill(small_disk)

        started = time.monotonic()
        resp = client.post("/api/v1/logs", content=_logs(2000, "full"), headers=headers)
        assert time.monotonic() - started < 10  # an answer, not a hang
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["retry-after"]) >= 1
        assert "No space left on device" in resp.json()["detail"]

        health = client.get("/healthz")
        assert health.status_code == 503 and "No space left" in health.json()["store_error"]
        alert = _wait(lambda: _meta_alert(server.state))
        assert alert.severity == "critical" and alert.state == "firing"
        assert "No space left on device" in alert.summary

        # a keyed request refused during the outage is simply retried after it: counted once
        key = {"idempotency-key": "disk-full-retry", **headers}
        assert client.post("/api/v1/logs", content=_logs(10, "keyed"), headers=key).status_code == 503

        ballast.unlink()
        resp = client.post("/api/v1/logs", content=_logs(100, "after"), headers=headers)
        assert resp.status_code == 200 and resp.json()["accepted"] == 100
        assert client.post("/api/v1/logs", content=_logs(10, "keyed"), headers=key).json()["accepted"] == 10
        assert client.post("/api/v1/logs", content=_logs(10, "keyed"), headers=key).json()["duplicate"] is True
        assert client.get("/healthz").status_code == 200
        _wait(lambda: _meta_alert(server.state) is None)

    store = server.state.store
    assert store.query("SELECT count(*) FROM logs")[0][0] == 160  # 50 before + 100 after + 10 keyed, once
    assert store.query("SELECT count(*) FROM logs WHERE trace_id LIKE 'full-%'")[0][0] == 0
    assert store.query("SELECT sum(count) FROM metrics_minute")[0][0] == 160


def _table(schema: LogSchema, n: int, tag: str) -> Any:
    vals = [
        {
            "timestamp": time.time(),
            "level": "INFO",
            "service": f"svc{i % 7}",
            "message": f"{tag} {i} " + os.urandom(100).hex(),
        }
        for i in range(n)
    ]
    return schema.validate(parse_values(vals), "test", now_us()).table


def test_loader_keeps_the_wal_through_a_full_disk_and_reloads_after_reopen(small_disk: Path, tmp_path: Path) -> None:
    """The WAL (on another disk) keeps acknowledging while DuckDB's disk is full; the loader fails,
    reopens the database DuckDB invalidated when its checkpoint hit the full disk, keeps the WAL,
    and loads every acknowledged log exactly once when space returns — without a restart."""
    schema = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
    path = small_disk / "store" / "loglens.duckdb"
    wal_dir = tmp_path / "wal"
    with Store(path, wal_dir=wal_dir, load_interval_s=0.05) as store:
        cur = store.cursor()
        cur.execute("SET checkpoint_threshold = '50KB'")  # checkpoint on (almost) every commit
        cur.close()
        assert store.submit(_table(schema, 100, "a"), [], now_us()).result().accepted == 100
        assert store.sync(30)
        ballast = fill(small_disk, leave_bytes=300_000)
        for _ in range(3):  # acknowledged: the WAL has room
            assert store.submit(_table(schema, 1000, "b"), [], now_us()).result().accepted == 1000
        loader = store.loader
        assert loader is not None
        _wait(lambda: loader.stats.failures >= 2, timeout=60)
        assert "checkpoint" in (loader.stats.last_error or "") or store.reopens >= 1, loader.stats.last_error
        assert store.last_error is not None and store.wal_error is None
        assert store.wal_status().lag_bytes > 0  # nothing dropped from the WAL
        ballast.unlink()
        assert store.submit(_table(schema, 500, "c"), [], now_us()).result().accepted == 500
        _wait(lambda: store.wal_status().lag_bytes == 0 and store.last_error is None, timeout=60)
        assert store.query("SELECT count(*) FROM logs")[0][0] == 3600
        assert store.query("SELECT count(DISTINCT id) FROM logs")[0][0] == 3600
    with Store(path, wal_dir=wal_dir) as reopened:  # and the file opens cleanly afterwards with the same content
        assert reopened.query("SELECT count(*) FROM logs")[0][0] == 3600
        assert reopened.query("SELECT sum(count) FROM metrics_minute")[0][0] == 3600


class _Engine:
    """A minimal alerting hook recording calls (StoreWatch only needs raise_meta/resolve_meta)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def raise_meta(self, name: str, summary: str, severity: str) -> None:
        self.calls.append(("raise", name, severity))
        if self.fail:
            raise RuntimeError("alert store down too")

    def resolve_meta(self, name: str) -> None:
        self.calls.append(("resolve", name))


class _FakeStore:
    last_error: str | None = None


@pytest.mark.anyio
async def test_storewatch_raises_once_resolves_once_and_survives_hook_failures() -> None:
    store = _FakeStore()
    engine = _Engine()
    watch = StoreWatch(store, engine)
    await watch.check()
    store.last_error = "IOException: disk full"
    await watch.check()
    await watch.check()  # still failing: no second alert
    store.last_error = None
    await watch.check()
    await watch.check()
    assert engine.calls == [("raise", META_NAME, "critical"), ("resolve", META_NAME)]

    failing = StoreWatch(store, _Engine(fail=True))
    store.last_error = "boom"
    await failing.check()  # the hook raising must not escape
    assert failing.raised
    no_alerting = StoreWatch(store, None)
    await no_alerting.check()  # no alerting component: nothing to call, no error
    assert no_alerting.raised
