"""File tail: RotatingFileHandler across rotations, copytruncate, partial lines, crash re-reads."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from protocol_helpers import dead, logs

from loglens.config import TailConfig
from loglens.ingest.mapping import lookup, map_document
from loglens.ingest.tail import Checkpoints, Tailer, decode_lines, default_checkpoint_path, http_sink
from loglens.schema import Parsed


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "levelname": record.levelname,
                "logger": "billing",
                "msg": record.getMessage(),
                "user": {"id": "u-1"},
            }
        ).decode()


def test_rotating_file_handler_tailed_across_rotations(tmp_path, settings_factory, live_server_factory):
    path = tmp_path / "app.log"
    settings = settings_factory(f"ingest:\n  files: [{path}]\nprotocols:\n  tail: {{poll_interval_ms: 10}}\n")
    srv = live_server_factory(settings)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=4000, backupCount=50)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"tail-test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    for i in range(300):
        (logger.error if i % 10 == 0 else logger.info)("line %d", i)
        if i % 50 == 0:
            time.sleep(0.03)  # let the tailer catch up with some rotations as they happen
    handler.close()
    assert len(list(tmp_path.glob("app.log.*"))) >= 5
    rows = logs(srv.state, "tail", 300)
    assert [r["message"] for r in rows] == [f"line {i}" for i in range(300)]  # none lost, none doubled
    assert rows[10]["level"] == "ERROR" and rows[11]["level"] == "INFO"
    assert {r["service"] for r in rows} == {"billing"}
    assert rows[0]["user_id"] == "u-1"
    assert abs((rows[-1]["ts"] - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 60
    # the checkpoint is written just after the commit the rows came from: wait for it to catch up
    ckpt = default_checkpoint_path(settings.protocols.tail, settings.storage.path)
    deadline = time.monotonic() + 60
    while orjson.loads(ckpt.read_bytes())[str(path)]["offset"] != path.stat().st_size:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert orjson.loads(ckpt.read_bytes())[str(path)]["ino"] == path.stat().st_ino


class Collect:
    """A sink recording what was committed; can fail like a crash before commit."""

    def __init__(self, fail_first: bool = False) -> None:
        self.records: list[Parsed] = []
        self.fail_first = fail_first

    async def __call__(self, parsed: Parsed) -> None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("crash before commit")
        self.records.append(parsed)

    @property
    def messages(self) -> list[str]:
        return [v.get("message") if isinstance(v, dict) else None for p in self.records for v in p.values]


def _line(msg: str) -> bytes:
    return orjson.dumps({"timestamp": "2026-11-23T14:00:00Z", "level": "info", "service": "s", "message": msg}) + b"\n"


def _tailer(path: Path, sink: Collect, tmp_path: Path, **cfg) -> Tailer:
    config = TailConfig(**cfg)
    return Tailer([path], sink, _mapping(), config, tmp_path / "ckpt" / "offsets.json")


def _mapping():
    from loglens.config import MappingsConfig

    return MappingsConfig().tail


def test_partial_line_copytruncate_and_crash_rereads(tmp_path):
    path = tmp_path / "x.log"
    sink = Collect(fail_first=True)
    t = _tailer(path, sink, tmp_path)
    assert asyncio.run(t.poll_once()) == 0  # the file does not exist yet
    path.write_bytes(_line("a") + b'{"timestamp": "2026-11-23T14:00:00Z", "level": "info", "serv')
    with pytest.raises(RuntimeError):
        asyncio.run(t.poll_once())  # crash before the commit: the checkpoint must not move
    assert not (tmp_path / "ckpt" / "offsets.json").exists()
    t2 = _tailer(path, sink, tmp_path)
    assert asyncio.run(t2.poll_once()) == 1  # re-read after the "crash"; the partial line waits
    with path.open("ab") as fh:
        fh.write(b'ice": "s", "message": "b"}\n\n\n')
    assert asyncio.run(t2.poll_once()) == 1
    assert sink.messages == ["a", "b"]
    # copytruncate: the file shrinks under us, reading restarts at 0
    with path.open("r+b") as fh:
        fh.truncate(0)
    path.write_bytes(_line("c"))
    assert asyncio.run(t2.poll_once()) == 1
    assert sink.messages == ["a", "b", "c"]
    # restart: nothing is read twice
    t3 = _tailer(path, sink, tmp_path)
    assert asyncio.run(t3.poll_once()) == 0


def test_rotation_while_stopped_and_oversized_line(tmp_path):
    path = tmp_path / "y.log"
    sink = Collect()
    t = _tailer(path, sink, tmp_path, max_line_bytes=1000, batch_lines=2)
    path.write_bytes(_line("1") + _line("2"))
    asyncio.run(t.poll_once())
    with path.open("ab") as fh:
        fh.write(_line("3") + b"z" * 5000 + b"\n" + _line("4") + b'{"tail": "no newline"}')
    os.rename(path, tmp_path / "y.log.1")  # rotated while loglens is down
    path.write_bytes(_line("5"))
    t2 = _tailer(path, sink, tmp_path, max_line_bytes=1000, batch_lines=2)
    asyncio.run(t2.poll_once())
    assert sink.messages[:3] == ["1", "2", "3"]
    assert sink.messages[4:] == ["4", None, "5"]
    oversized = next(p for p in sink.records if p.failures)
    assert "exceeds max_line_bytes" in next(iter(oversized.failures.values()))
    assert len(oversized.raw(0)) > 0


def test_huge_single_line_waits_for_newline_then_dead_letters(tmp_path):
    path = tmp_path / "big.log"
    sink = Collect()
    t = _tailer(path, sink, tmp_path, max_line_bytes=1024)
    path.write_bytes(b"q" * (10 * 1024 * 1024))  # a 10 MB line still being written
    assert asyncio.run(t.poll_once()) == 0
    with path.open("ab") as fh:
        fh.write(b"\n" + _line("after") + b"not json\n")
    assert asyncio.run(t.poll_once()) == 3
    assert sink.messages == [None, "after", None]
    reasons = [r for p in sink.records for r in p.failures.values()]
    assert "exceeds max_line_bytes" in reasons[0] and reasons[1].startswith("malformed JSON")


def test_run_loop_stops_and_checkpoint_file_recovers(tmp_path):
    ckpt = tmp_path / "bad.json"
    ckpt.write_text("{garbage")
    assert Checkpoints(ckpt).data == {}
    path = tmp_path / "z.log"
    path.write_bytes(_line("r"))
    sink = Collect()
    t = Tailer([path], sink, _mapping(), TailConfig(poll_interval_ms=1), ckpt)

    async def go() -> None:
        task = asyncio.create_task(t.run())
        while not sink.records:
            await asyncio.sleep(0.005)
        t.stop()
        await task

    asyncio.run(go())
    assert sink.messages == ["r"] and t.committed == 1


def test_decode_lines_and_mapping_units():
    parsed = decode_lines([b'"just a string"', b'{"msg": "m", "log.level": "warn", "app": "a"}'], _mapping(), 100)
    assert parsed.values[0] == "just a string"  # the schema rejects it: not an object
    assert parsed.values[1]["message"] == "m" and parsed.values[1]["service"] == "a"
    doc = {"service": {"name": "x", "version": "1"}, "metadata": {"k": 1}, "level": "error"}
    out = map_document(doc, _mapping(), fixed={"message": "f"})
    assert out["service"] == "x" and out["level"] == "error"
    assert out["metadata"] == {"k": 1, "service": {"version": "1"}}  # the unmapped rest is kept
    assert lookup({"a": {"b": 1}}, "a.c") is not None  # missing → sentinel, not None


def test_cli_tail_posts_to_a_server(tmp_path, live_server):
    from typer.testing import CliRunner

    from loglens.cli import app

    path = tmp_path / "cli.log"
    path.write_bytes(_line("via-cli") + b"broken\n")
    result = CliRunner().invoke(
        app, ["tail", str(path), "--url", live_server.url, "--once", "--checkpoint", str(tmp_path / "cli.json")]
    )
    assert result.exit_code == 0, result.output
    assert "2 lines" in result.output
    assert logs(live_server.state, "http")[0]["message"] == "via-cli"
    assert dead(live_server.state, "http")[0][1] == "broken"
    _sink, close = http_sink(live_server.url, token="t")
    asyncio.run(close())
