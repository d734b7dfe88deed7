"""Real `loglens serve` processes killed with SIGKILL while acknowledged logs are only in the WAL.

The loader interval is set to its maximum so the acknowledged requests are (most likely) not yet
in DuckDB when the process dies: the restart must replay them from the WAL exactly once, keep
their Idempotency-Keys, drop a torn last frame, and answer queries for them.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import httpx
import orjson
from crash_harness import REPO, ServerProcess, replay_wal


def _config(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.yaml"
    cfg.write_text(
        f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{path: {workdir / "store" / "loglens.duckdb"}, load_interval_ms: 1000}}
schemas: {{log: {REPO / "schemas" / "log_schema.yaml"}, anomaly: {REPO / "schemas" / "anomaly_schema.yaml"}}}
notifiers: []
logging: {{level: INFO}}  # the "loglens listening" line names the port the server bound
""",
        encoding="utf-8",
    )
    return cfg


def _body(tag: str, n: int) -> bytes:
    return b"\n".join(
        orjson.dumps({"timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "service": "wal", "message": f"{tag}-{i}"})
        for i in range(n)
    )


def _post(url: str, body: bytes, key: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/x-ndjson"}
    if key:
        headers["idempotency-key"] = key
    return httpx.post(f"{url}/api/v1/logs", content=body, headers=headers, timeout=30)


def test_kill9_with_a_wal_backlog_then_a_torn_tail_replays_exactly_once_and_keeps_keys(tmp_path: Path) -> None:
    server = ServerProcess(_config(tmp_path), 0, tmp_path / "server.log")
    server.start()
    try:
        for i in range(5):
            assert _post(server.url, _body(f"a{i}", 20), key=f"key-{i}").json()["accepted"] == 20
        server.kill()  # within the loader interval: the batches are only in the WAL

        segments = sorted((tmp_path / "store" / "loglens.duckdb.wal.d").glob("*.seg"))
        assert segments
        with segments[-1].open("ab") as f:  # a frame torn by the crash (never acknowledged)
            f.write(b"LLW1" + b"\x00" * 20)

        server.start()
        for i in range(5):  # the keys acknowledged before the crash still mean "already stored"
            again = _post(server.url, _body(f"a{i}", 20), key=f"key-{i}").json()
            assert again["duplicate"] is True and again["accepted"] == 0
        assert _post(server.url, _body("b", 7), key="key-new").json()["accepted"] == 7
        deadline = time.monotonic() + 60  # reads wait for new acknowledgements, not for the start-up replay
        while httpx.get(f"{server.url}/healthz", timeout=30).json()["replay_progress"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        search = httpx.get(f"{server.url}/api/v1/logs", params={"service": "wal", "limit": 1000}, timeout=30).json()
        assert len(search["logs"]) == 107  # read right after the acknowledgement: already visible
        status = httpx.get(f"{server.url}/api/v1/status", timeout=30).json()
        assert status["wal"]["replay_progress"] == 1.0
        metrics_text = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert "loglens_wal_lag_bytes" in metrics_text and "loglens_wal_replay_progress" in metrics_text
    finally:
        server.kill()
    replay_wal(tmp_path / "store" / "loglens.duckdb")
    con = duckdb.connect(str(tmp_path / "store" / "loglens.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT message), count(DISTINCT id) FROM logs").fetchone() == (
            107,
            107,
            107,
        )
        assert con.execute("SELECT sum(count) FROM metrics_minute").fetchone() == (107,)
        assert con.execute("SELECT total FROM services WHERE service = 'wal'").fetchone() == (107,)
        assert con.execute("SELECT count(*) FROM ingest_keys").fetchone() == (6,)
    finally:
        con.close()
