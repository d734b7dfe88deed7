"""`loglens export` and the serve archiver: hive-partitioned Parquet from the live store,
idempotent, resumable, atomic per hour — and an archive plus the store never counts a log twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from analyze_data import REPO, logs
from typer.testing import CliRunner

from loglens.analyze import AnalyzeOptions, run_analysis
from loglens.analyze.inputs import discover, plan
from loglens.cli import app
from loglens.config import Settings, parse_settings
from loglens.ops.archiver import Archiver
from loglens.schema import LogSchema, parse_values
from loglens.store import Store
from loglens.store.archive import load_manifest

runner = CliRunner()
CONFIG = ["--config", str(REPO / "config.yaml")]
NOW = 1_800_000_000_000_000
HOUR_22 = 1_699_999_200  # 2023-11-14T22:00:00Z


def fill(store: Store, settings: Settings, records: list[dict[str, Any]]) -> None:
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    batch = schema.validate(parse_values(records), "http", NOW)
    store.submit(batch.table, batch.rejections, NOW).result(timeout=60)


@pytest.fixture
def store_file(tmp_path: Path, settings: Settings) -> Path:
    """A store with 9,000 logs over 3 hours (2023-11-14T22 .. 2023-11-15T00) and 1 dead letter."""
    db = tmp_path / "store" / "loglens.duckdb"
    records = logs(9_000, seed=12)
    for i, r in enumerate(records):  # 3,000 in each of three hours
        r["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(HOUR_22 + i * 1.2)) + "Z"
    with Store(db, retention_days=1e5, metrics_retention_days=1e5) as store:
        fill(store, settings, [*records, {"level": "INFO"}])
    return db


def analyse(settings: Settings, paths: list[Any], **kw: Any) -> dict[str, Any]:
    return run_analysis(settings, AnalyzeOptions(paths=paths, progress=False, **kw))


def export(*args: str) -> Any:
    return runner.invoke(app, ["export", *args, *CONFIG])


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_export_writes_hive_partitioned_zstd_parquet(store_file: Path, tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "archive"
    result = export("--store", str(store_file), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 3 hour(s), 9,000 logs" in result.output
    files = parquet_files(out)
    dirs = {f.parent.relative_to(out).as_posix() for f in files}
    assert "date=2023-11-14/hour=22/service=checkout" in dirs and len(dirs) == 3 * 4
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert set(load_manifest(out)) == {"2023-11-14T22", "2023-11-14T23", "2023-11-15T00"}
    # the archive analyses exactly like the store it came from
    from_store, from_archive = analyse(settings, [store_file]), analyse(settings, [out])
    assert from_archive["minutes"] == from_store["minutes"]
    assert from_archive["summary"]["accepted"] == 9_000
    assert not list(out.glob(".tmp-*")) and not list(out.rglob(".old-*"))


def test_export_is_idempotent_and_resumable(store_file: Path, tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "archive"
    assert export("--store", str(store_file), "--out", str(out)).exit_code == 0
    before = parquet_files(out)
    again = export("--store", str(store_file), "--out", str(out))
    assert again.exit_code == 0 and "exported 0 hour(s)" in again.output and "3 hour(s) already" in again.output
    assert parquet_files(out) == before
    # a crash after writing an hour but before recording it: the rerun rewrites that hour only
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    del manifest["hours"]["2023-11-14T23"]
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    resumed = export("--store", str(store_file), "--out", str(out))
    assert "exported 1 hour(s)" in resumed.output, resumed.output
    assert analyse(settings, [out])["summary"]["accepted"] == 9_000  # rewritten, not duplicated
    forced = export("--store", str(store_file), "--out", str(out), "--force")
    assert "exported 3 hour(s)" in forced.output
    assert analyse(settings, [out])["summary"]["accepted"] == 9_000


def test_archive_plus_live_store_never_counts_a_log_twice(store_file: Path, tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "archive"
    whole = analyse(settings, [store_file])
    # part of the period archived, all of it still in the live store
    assert export("--store", str(store_file), "--out", str(out), "--until", "2023-11-14T23:00:00Z").exit_code == 0
    assert set(load_manifest(out)) == {"2023-11-14T22"}
    both = analyse(settings, [out, store_file])
    assert both["minutes"] == whole["minutes"]
    s = both["summary"]
    assert s["accepted"] == 9_000 and s["records"] == s["accepted"] + s["rejected"] == 9_001
    # everything archived: still counted once
    assert export("--store", str(store_file), "--out", str(out)).exit_code == 0
    assert analyse(settings, [store_file, out])["minutes"] == whole["minutes"]
    # a late log for an archived hour reaches the store: the next export rewrites that hour
    late = logs(1, seed=99)[0] | {"timestamp": "2023-11-14T22:30:00Z", "service": "checkout"}
    with Store(store_file, retention_days=1e5, metrics_retention_days=1e5) as store:
        fill(store, settings, [late])
    assert analyse(settings, [store_file, out])["summary"]["accepted"] == 9_001  # the late one from the store
    result = export("--store", str(store_file), "--out", str(out))
    assert "exported 1 hour(s), 3,001 logs" in result.output, result.output
    assert analyse(settings, [out])["summary"]["accepted"] == 9_001
    assert analyse(settings, [store_file, out])["summary"]["accepted"] == 9_001


def test_analyze_prunes_archive_directories(store_file: Path, tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "archive"
    assert export("--store", str(store_file), "--out", str(out)).exit_code == 0
    files = discover([out])
    assert len(files) == 12
    since, until = (HOUR_22 + 3600) * 1_000_000, (HOUR_22 + 7200) * 1_000_000  # the 23:00 hour
    parts = plan(files, 4, since_us=since, until_us=until, service="auth")
    read = [f for p in parts for f in p.files]
    assert len(read) == 1 and "hour=23/service=auth" in read[0]
    report = analyse(
        settings,
        [out],
        since=datetime(2023, 11, 14, 23, tzinfo=UTC),
        until=datetime(2023, 11, 15, 0, tzinfo=UTC),
        service="auth",
    )
    assert report["summary"]["records"] == report["summary"]["accepted"] > 0  # nothing else was even read
    assert {m["minute"][11:13] for m in report["minutes"]} == {"23"}


def test_export_errors_exit_2(tmp_path: Path, store_file: Path) -> None:
    missing = export("--store", str(tmp_path / "nope.duckdb"), "--out", str(tmp_path / "a"))
    assert missing.exit_code == 2 and "no such store file" in missing.output
    bad = export("--store", str(store_file), "--since", "2024-01-02", "--until", "2024-01-01")
    assert bad.exit_code == 2 and "--since must be before --until" in bad.output
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    broken = export("--store", str(store_file), "--out", str(tmp_path / "m"))
    assert broken.exit_code == 2 and "not a loglens archive manifest" in broken.output
    with Store(store_file, retention_days=1e5, metrics_retention_days=1e5):  # a running server holds the lock
        locked = export("--store", str(store_file), "--out", str(tmp_path / "b"))
    assert locked.exit_code == 2 and "cannot open the store read-only" in locked.output


def test_serve_archiver_archives_closed_hours_and_trims_the_live_store(
    store_file: Path, tmp_path: Path, settings: Settings
) -> None:
    cfg = parse_settings(
        f"archive:\n  enabled: true\n  directory: {tmp_path / 'auto'}\n  delay_seconds: 600\n"
        "  live_retention_hours: 0.5\nstorage:\n  retention_days: 100000\n",
        base_dir=REPO,
    )
    with Store(store_file, retention_days=1e5, metrics_retention_days=1e5) as store:
        archiver = Archiver(store, cfg.archive, cfg.storage.retention_days)
        # at 00:15 on the 15th, 22:00 and 23:00 ended more than 10 minutes ago; 00:00 is open
        report = archiver.run_once(now_s=HOUR_22 + 2 * 3600 + 900)
        assert report.written == ["2023-11-14T22", "2023-11-14T23"]
        # the unarchived 00:00 hour must survive retention: 1 h 15 min kept, not 30 min
        assert store.retention_days * 24 == pytest.approx(1.25)
        report = archiver.run_once(now_s=HOUR_22 + 3 * 3600 + 600)  # 01:10: 00:00 ended 10 minutes ago
        assert report.written == ["2023-11-15T00"] and report.skipped == ["2023-11-14T22", "2023-11-14T23"]
        assert store.retention_days * 24 == pytest.approx(0.5)  # all archived: the live retention alone
        deleted = store.apply_retention(HOUR_22 + 3 * 3600 + 600)  # as the writer's retention step would
        assert deleted == 8_000  # everything before 00:40
    both = analyse(settings, [tmp_path / "auto", store_file])
    assert both["summary"]["accepted"] == 9_000  # trimmed store + archive: every log once


def test_archiver_runs_on_the_event_loop_and_in_the_runtime(store_file: Path, tmp_path: Path) -> None:
    import asyncio

    from loglens.runtime import Runtime

    cfg = parse_settings(
        f"archive:\n  enabled: true\n  directory: {tmp_path / 'loop'}\n  interval_seconds: 0.05\n"
        f"storage:\n  path: {store_file}\n  retention_days: 100000\n",
        base_dir=REPO,
    )
    assert Runtime(parse_settings("{}", base_dir=REPO)).archiver is None  # archive.enabled is false by default
    runtime = Runtime(cfg)
    archiver = runtime.archiver
    assert archiver is not None and archiver in runtime.components

    async def run() -> None:
        with Store(store_file, retention_days=1e5, metrics_retention_days=1e5) as store:
            archiver.store = store
            await archiver.start()
            deadline = time.monotonic() + 60
            while archiver.runs == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await archiver.stop()

    asyncio.run(run())
    assert archiver.runs >= 1 and archiver.last_error is None
    assert set(load_manifest(tmp_path / "loop")) == {"2023-11-14T22", "2023-11-14T23", "2023-11-15T00"}


def test_archive_without_manifest_counts_whole_hours_as_archived(tmp_path: Path) -> None:
    from loglens.analyze.inputs import archived_ids, hour_of, prune

    f = tmp_path / "date=2023-11-14" / "hour=22" / "service=a%2Fb" / "part-1.parquet"
    assert hour_of(f) == HOUR_22 * 1_000_000
    assert archived_ids([f]) == ((HOUR_22 * 1_000_000, 2**62),)
    assert hour_of(tmp_path / "x.parquet") is None
    assert prune(f, None, None, "a/b") and not prune(f, None, None, "c")
    assert not prune(f, (HOUR_22 + 3600) * 1_000_000, None, None)
    assert not prune(f, None, HOUR_22 * 1_000_000, None)
    assert prune(tmp_path / "date=bad" / "hour=1" / "f.parquet", 0, 1, None)  # not our layout: read it
