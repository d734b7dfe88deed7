"""Issue 17 item 9: every CLI path ends in clean one-line errors, from any directory.

Each command runs as a real process (`python -m loglens.cli`) in a directory that is not the
repository, so relative defaults cannot accidentally find the repo's schemas.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests_support import REPO


def run_cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`loglens ARGS` as a process started in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "loglens.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LOGLENS_API_TOKEN": "", "LOGLENS_ADMIN_TOKEN": ""},
    )


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port bound (not listening) for the test: nothing answers on it, nobody else takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def config_without_schemas(directory: Path, port: int) -> Path:
    """A config with no `schemas:` section, so the schema defaults apply (relative to the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / "config.yaml"
    cfg.write_text(f"server: {{port: {port}}}\nstorage: {{path: store/ll.duckdb}}\nnotifiers: []\n", encoding="utf-8")
    return cfg


def assert_clean(result: subprocess.CompletedProcess[str], expect: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, result.stderr
    assert expect in lines[0], result.stderr
    assert result.returncode in (1, 2), result.stderr


def config_naming_schemas(directory: Path, port: int) -> Path:
    """A config that names its schemas (`schemas/...`, relative to the file) without providing them."""
    cfg = config_without_schemas(directory, port)
    cfg.write_text(
        cfg.read_text(encoding="utf-8")
        + "schemas: {log: schemas/log_schema.yaml, anomaly: schemas/anomaly_schema.yaml}\n",
        encoding="utf-8",
    )
    return cfg


def test_every_command_reports_a_missing_schema_in_one_line(tmp_path: Path, held_port: int) -> None:
    cfg = config_naming_schemas(tmp_path / "conf", held_port)
    data = tmp_path / "in.ndjson"
    data.write_bytes(orjson.dumps({"timestamp": "2026-01-01T00:00:00Z", "message": "m"}) + b"\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    commands = [
        ["serve", "--config", str(cfg), "--port", "0"],
        ["analyze", str(data), "--config", str(cfg), "--no-progress"],
        ["backtest", str(data), "--config", str(cfg)],
        ["ingest", str(data), "--config", str(cfg)],
        ["tail", str(data), "--once", "--config", str(cfg)],
        ["check-config", str(cfg)],
        ["dead-letter", "replay", "--config", str(cfg)],
    ]
    for command in commands:
        result = run_cli(elsewhere, *command)
        assert_clean(result, "schema file not found")
        # the schema is looked for next to the config file, not in the current directory
        assert str(tmp_path / "conf" / "schemas" / "log_schema.yaml") in result.stderr, command
    # commands that need no schema still work from anywhere
    for command in (["status", "--config", str(cfg)], ["dead-letter", "list", "--config", str(cfg)]):
        result = run_cli(elsewhere, *command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)


def test_schemas_left_at_their_defaults_fall_back_to_the_packaged_copy(tmp_path: Path, held_port: int) -> None:
    """Run outside a checkout — no `schemas/` beside the config, or no config at all — loglens
    validates with the schema shipped in the package, the same rules as the repository's file."""
    data = tmp_path / "in.ndjson"
    good = {"timestamp": "2026-01-01T00:00:00Z", "level": "ERROR", "service": "api", "message": "m"}
    data.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({"level": "INFO"}) + b"\n")
    cfg = config_without_schemas(tmp_path / "conf", held_port)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(elsewhere, "check-config", str(cfg))
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr
    out = tmp_path / "report.json"
    for args in (["--config", str(cfg)], []):  # a config without `schemas:`, and no config at all
        result = run_cli(elsewhere, "analyze", str(data), "--out", str(out), "--no-progress", *args)
        assert result.returncode == 0, result.stderr
        report = orjson.loads(out.read_bytes())
        assert (report["summary"]["accepted"], report["summary"]["rejected"]) == (1, 1), report["summary"]
        reasons = [r["reason"] for r in report["bad_lines"]["by_reason"]]
        assert any("required" in r for r in reasons), reasons


def test_schema_path_resolves_relative_to_the_config_file(tmp_path: Path, held_port: int) -> None:
    cfg = config_without_schemas(tmp_path / "conf", held_port)
    shutil.copytree(REPO / "schemas", tmp_path / "conf" / "schemas")
    result = run_cli(tmp_path, "check-config", str(cfg))
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr


def test_an_invalid_schema_is_one_line_with_file_and_line(tmp_path: Path, held_port: int) -> None:
    cfg = config_naming_schemas(tmp_path / "conf", held_port)
    (tmp_path / "conf" / "schemas").mkdir()
    (tmp_path / "conf" / "schemas" / "log_schema.yaml").write_text("type: [\n", encoding="utf-8")
    result = run_cli(tmp_path, "serve", "--config", str(cfg), "--port", "0")
    assert_clean(result, "log_schema.yaml:2: invalid YAML")
    assert "listening" not in result.stderr
    (tmp_path / "conf" / "schemas" / "log_schema.yaml").write_text("type: 5\n", encoding="utf-8")
    result = run_cli(tmp_path, "ingest", str(cfg), "--config", str(cfg))
    assert_clean(result, "log_schema.yaml: invalid JSON Schema")


def repo_schema_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"storage: {{path: {tmp_path / 'store' / 'll.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas' / 'log_schema.yaml'}, anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}}}\n"
        "notifiers: []\n",
        encoding="utf-8",
    )
    return cfg


def test_a_busy_port_is_one_line_and_never_claims_to_listen(tmp_path: Path) -> None:
    cfg = repo_schema_config(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(tmp_path, "serve", "--config", str(cfg), "--port", str(port))
    assert_clean(result, f"cannot listen on 127.0.0.1:{port}")
    assert "listening" not in result.stderr
    assert not (tmp_path / "store" / "ll.duckdb").exists()  # the store is not even opened


def test_port_0_logs_the_real_port_after_the_bind(tmp_path: Path) -> None:
    cfg = repo_schema_config(tmp_path)
    err_path = tmp_path / "stderr.log"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loglens.cli", "serve", "--config", str(cfg), "--port", "0"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        event = None
        while event is None:
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            for line in err_path.read_text().splitlines():
                if '"loglens listening"' in line:
                    event = orjson.loads(line)
            time.sleep(0.1)
        port = event["metadata"]["port"]
        assert port != 0 and event["metadata"]["url"] == f"http://127.0.0.1:{port}/"
        # the line is logged once the server accepts connections
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_a_store_held_by_another_process_is_one_line(tmp_path: Path) -> None:
    import duckdb

    cfg = repo_schema_config(tmp_path)
    (tmp_path / "store").mkdir()
    holder = duckdb.connect(str(tmp_path / "store" / "ll.duckdb"))  # a writer holds the file lock
    try:
        result = run_cli(tmp_path, "serve", "--config", str(cfg), "--port", "0")
    finally:
        holder.close()
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ll.duckdb" in lines[0], result.stderr
    assert "listening" not in result.stderr
