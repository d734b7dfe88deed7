"""Dead-letter replay after a schema change (real server process) and the CLI on a local store."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from ops_support import ServerProcess, now_iso, write_config
from typer.testing import CliRunner

from loglens.cli import app
from loglens.config import load_settings
from loglens.ingest import replay
from loglens.ingest.pipeline import IngestPipeline
from loglens.ops.commands import parse_since
from loglens.schema import LogSchema
from loglens.store import Store
from tests_support import REPO

runner = CliRunner()
LONG = "this message is far longer than twenty characters"


def _strict_schema(tmp_path: Path) -> Path:
    text = (REPO / "schemas" / "log_schema.yaml").read_text()
    assert "maxLength: 65536" in text
    path = tmp_path / "log_schema.yaml"
    path.write_text(text.replace("maxLength: 65536", "maxLength: 20"))
    return path


def _loosen(schema: Path) -> None:
    schema.write_text(schema.read_text().replace("maxLength: 20", "maxLength: 65536"))


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_replay_after_schema_change(tmp_path: Path, server_process: Callable[[Path], ServerProcess]) -> None:
    schema = _strict_schema(tmp_path)
    config = write_config(tmp_path, schema=schema)
    sp = server_process(config)
    logs = [{"timestamp": now_iso(), "level": "INFO", "service": "replay", "message": f"{LONG} {i}"} for i in range(5)]
    logs.append({"timestamp": now_iso(), "level": "INFO", "service": "replay", "message": "short"})
    logs.append({"level": "INFO", "service": "replay", "message": "no timestamp"})
    with sp.client() as c:
        r = c.post("/api/v1/logs", json=logs)
        assert r.json()["accepted"] == 1 and r.json()["rejected"] == 6
        c.post("/api/v1/logs", content=b'{"broken": ', headers={"content-type": "application/json"})
        # still strict: replay finds nothing valid and marks nothing
        out = _cli("dead-letter", "replay", "--url", sp.url, "--reason", "message")
        assert "replayed 0, still invalid 5" in out
        _loosen(schema)
        sp.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not (c.get("/api/v1/status").json().get("last_reload") or {}).get("ok"):
            assert time.monotonic() < deadline, "SIGHUP reload not applied"
            time.sleep(0.05)
        out = _cli("dead-letter", "list", "--url", sp.url, "--reason", "message", "--since", "1h")
        assert out.startswith("5 dead-letter record(s)")
        out = _cli("dead-letter", "replay", "--url", sp.url)
        assert "matched 7, replayed 5, still invalid 1, skipped 1" in out
        stored = c.get("/api/v1/logs", params={"service": "replay", "limit": 100}).json()["logs"]
        assert sorted(x["message"] for x in stored) == sorted([*(x["message"] for x in logs[:5]), "short"])
        # replaying again does nothing: every replayed record is marked
        out = _cli("dead-letter", "replay", "--url", sp.url)
        assert "replayed 0" in out
        assert len(c.get("/api/v1/logs", params={"service": "replay", "limit": 100}).json()["logs"]) == 6
        assert c.post("/api/v1/dead-letter/replay").json()["replayed"] == 0  # no body: every record
        dead = c.get("/api/v1/dead-letter", params={"reason": "message"}).json()["dead_letters"]
        assert all(d["replayed_at"] for d in dead)
        one = c.get(f"/api/v1/dead-letter/{dead[0]['id']}").json()
        assert one["replayed_at"] and LONG in one["raw"]
        assert c.get("/api/v1/dead-letter/999999").status_code == 404
        out = _cli("dead-letter", "show", str(dead[0]["id"]), "--url", sp.url)
        assert LONG in out
        result = runner.invoke(app, ["dead-letter", "show", "999999", "--url", sp.url])
        assert result.exit_code == 1
    assert sp.stop() == 0


def _local_store(tmp_path: Path) -> tuple[Path, Path]:
    """A stopped server's store with rejected records, and a config pointing at it."""
    schema = _strict_schema(tmp_path)
    config = write_config(tmp_path, schema=schema)
    settings = load_settings(config)
    strict = LogSchema.from_file(schema)
    from loglens.schema import now_us, parse_values

    values = [{"timestamp": now_iso(), "level": "INFO", "service": "local", "message": f"{LONG} {i}"} for i in range(3)]
    with Store(settings.storage.path) as store:
        batch = strict.validate(parse_values(values), "http", now_us())
        store.submit(batch.table, batch.rejections, now_us()).result()
    return config, schema


def test_cli_on_the_local_store(tmp_path: Path) -> None:
    config, schema = _local_store(tmp_path)
    out = _cli("dead-letter", "list", "--config", str(config))
    assert out.startswith("3 dead-letter record(s)")
    assert LONG in _cli("dead-letter", "show", "1", "--config", str(config))
    assert runner.invoke(app, ["dead-letter", "show", "99", "--config", str(config)]).exit_code == 1
    assert "replayed 0, still invalid 3" in _cli("dead-letter", "replay", "--config", str(config))
    _loosen(schema)
    assert "replayed 1" in _cli("dead-letter", "replay", "--config", str(config), "--id", "2")
    assert "matched 2, replayed 2" in _cli("dead-letter", "replay", "--config", str(config), "--since", "1h")
    assert "matched 0" in _cli("dead-letter", "replay", "--config", str(config))
    status = _cli("status", "--config", str(config))
    assert "not running" in status and "logs" in status and "3 rows" in status
    assert '"source": "store"' in _cli("status", "--config", str(config), "--json")
    # a broken schema file is reported, not a traceback
    schema.write_text("type: [object\n")
    result = runner.invoke(app, ["dead-letter", "replay", "--config", str(config)])
    assert result.exit_code == 1 and "log_schema.yaml" in result.output


def test_replay_claims_each_record_once(tmp_path: Path) -> None:
    config, schema = _local_store(tmp_path)
    _loosen(schema)
    settings = load_settings(config)
    loose = LogSchema.from_file(schema)
    with Store(settings.storage.path) as store:
        first = replay.replay(IngestPipeline(loose, store), reason="nothing matches this")
        assert first.matched == 0
        done = replay.replay(IngestPipeline(loose, store), ids=[1, 3])
        assert done.replayed_ids == [1, 3] and done.to_json()["replayed"] == 2
        again = replay.replay(IngestPipeline(loose, store), ids=[1, 2, 3])
        assert again.replayed_ids == [2]
        assert replay.get(store, 1)["replayed_at"] is not None
        assert store.query("SELECT count(*) FROM logs")[0][0] == 3


def test_parse_since() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(typer.BadParameter):
        parse_since("yesterday")
