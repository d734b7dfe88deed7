"""The `loglens` command line: version, ingest (local store and over HTTP), serve as a process."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from typer.testing import CliRunner

from loglens import __version__
from loglens.cli import app
from loglens.demo import generate_logs
from loglens.store import Store
from tests_support import LiveServer, count_rows, wait_until_serving

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def write_config(tmp_path: Path, port: int = 0) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"server: {{port: {port}}}\nstorage: {{path: {tmp_path / 'store' / 'll.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas' / 'log_schema.yaml'}, anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}}}\n"
    )
    return cfg


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"loglens {__version__}"


def test_ingest_into_local_store_ndjson_gz_and_array(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    logs = list(generate_logs(120))
    nd = tmp_path / "a.ndjson.gz"
    nd.write_bytes(gzip.compress(b"\n".join(orjson.dumps(x) for x in logs) + b"\n{bad json\n"))
    arr = tmp_path / "b.json"
    arr.write_bytes(orjson.dumps(logs[:30]))
    r1 = runner.invoke(app, ["ingest", str(nd), "--config", str(cfg), "--batch-size", "50"])
    assert r1.exit_code == 0, r1.output
    assert "accepted 120, rejected 1" in r1.output
    assert "dead-letter" in r1.output
    r2 = runner.invoke(app, ["ingest", str(arr), "--config", str(cfg)])
    assert "accepted 30, rejected 0" in r2.output
    with Store(tmp_path / "store" / "ll.duckdb") as store:
        assert store.query("SELECT count(*) FROM logs")[0][0] == 150
        assert store.query("SELECT count(*) FROM dead_letter")[0][0] == 1


def test_ingest_of_text_lines_that_start_with_a_bracket(tmp_path: Path) -> None:
    """An Apache-style error log starts with `[` but is no JSON array: `loglens ingest` reads it
    line by line (each line a rejected record with its own dead letter), not as one failed array."""
    cfg = write_config(tmp_path)
    text = tmp_path / "error.log"
    lines = [f"[Sun Dec 04 04:47:{s:02d} 2005] [error] mod_jk child workerEnv in error state {s}" for s in range(12)]
    text.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["ingest", str(text), "--config", str(cfg), "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    assert "accepted 0, rejected 12" in result.output
    with Store(tmp_path / "store" / "ll.duckdb") as store:
        assert [r[0] for r in store.query("SELECT raw FROM dead_letter ORDER BY id")] == lines


def test_ingest_posts_to_a_server(live_server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in generate_logs(70)) + b"\n")
    result = runner.invoke(app, ["ingest", str(path), "--url", live_server.url, "--batch-size", "20"])
    assert result.exit_code == 0, result.output
    assert "accepted 70, rejected 0" in result.output
    assert count_rows(live_server, "logs") == 70


def test_ingest_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.ndjson")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_serve_process_binds_loopback_and_stops_cleanly(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 0)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loglens.cli", "serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ},
        )
    try:
        url = wait_until_serving(proc, log_path)  # port 0: the log names the real port
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        r = httpx.post(f"{url}/api/v1/logs", json=list(generate_logs(5)))
        assert r.json()["accepted"] == 5
        assert httpx.get(f"{url}/docs").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = log_path.read_bytes()
    assert proc.returncode == 0
    # only loglens's own JSON log lines: no traceback, and nothing a library prints at exit
    # (DuckDB's bindings report objects left uncollected, e.g. by a gc.freeze() never undone)
    assert [line for line in err.splitlines() if not line.startswith(b"{")] == []
    assert (tmp_path / "d" / "loglens.duckdb").exists()  # --data-dir overrides storage.path
    with Store(tmp_path / "d" / "loglens.duckdb") as store:
        assert store.query("SELECT count(*) FROM logs")[0][0] == 5


def test_serve_on_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = write_config(tmp_path, busy.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "loglens.cli", "serve", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1:" in result.stderr and "Traceback" not in result.stderr
    assert "loglens listening" not in result.stderr  # announced only once the port is ours
