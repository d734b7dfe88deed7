"""Hourly Parquet archive of the store's logs (`loglens export`, and `serve` with `archive:`).

Layout: `DIR/date=YYYY-MM-DD/hour=HH/service=NAME/part-<uuid>.parquet` (hive partitioning,
zstd), written by DuckDB's own `COPY ... TO (FORMAT parquet, PARTITION_BY ...)` straight from
the `logs` table. Dask, Ray, DuckDB, Spark or `loglens analyze` read it directly; analyze prunes
whole directories by `--since/--until/--service`.

The unit of work is one hour:
- **atomic**: an hour is written into a hidden temporary directory and renamed into place; an
  hour that is rewritten is swapped (old renamed aside, new renamed in, old removed), so a
  reader never sees two copies of an hour.
- **idempotent and resumable**: `manifest.json` records each exported hour with its row count
  and highest log id; an hour whose count and max id in the store are unchanged is skipped, so a
  rerun after a crash continues where it stopped, and an hour that gained late logs is rewritten.
A crash between the rename and the manifest update only means the hour is rewritten next time.

Reads go through a DuckDB connection the caller provides: a read-only connection to the file
(`loglens export`) or a cursor of the running store (`serve`); nothing here writes to the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from loglens.models import SCHEMA_FIELDS

MANIFEST = "manifest.json"
HOUR_US = 3_600_000_000
# What an archive row keeps: every stored column (metadata as JSON text), plus the partition keys.
COLUMNS = ("id", "ts", "received_at", *SCHEMA_FIELDS[1:], "metadata", "late", "source")  # ts: the timestamp


class ArchiveError(RuntimeError):
    """The archive directory or the store cannot be used (message names which and why)."""


@dataclass(frozen=True, slots=True)
class HourStats:
    """Logs of one hour in the store: their count and highest id (changes when logs arrive late)."""

    start_us: int
    rows: int
    max_id: int

    @property
    def key(self) -> str:
        """`YYYY-MM-DDTHH`, the manifest key and the directory names of the hour."""
        return hour_key(self.start_us)


@dataclass
class ExportReport:
    """What one export pass did."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: int = 0


def hour_key(start_us: int) -> str:
    """`YYYY-MM-DDTHH` of an hour starting at epoch µs `start_us`."""
    return datetime.fromtimestamp(start_us / 1e6, UTC).strftime("%Y-%m-%dT%H")


def hour_dir(out: Path, start_us: int) -> Path:
    """`out/date=YYYY-MM-DD/hour=HH` of an hour."""
    key = hour_key(start_us)
    return out / f"date={key[:10]}" / f"hour={key[11:]}"


def to_us(dt: datetime) -> int:
    """Epoch µs of a datetime (naive = UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


# ---- manifest -------------------------------------------------------------------------------
def load_manifest(out: Path) -> dict[str, dict[str, int | str]]:
    """Exported hours: key → {rows, max_id, exported_at}. Empty for a new directory."""
    path = out / MANIFEST
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"{path}: not a loglens archive manifest ({exc})") from None
    hours = doc.get("hours") if isinstance(doc, dict) else None
    if not isinstance(hours, dict):
        raise ArchiveError(f"{path}: not a loglens archive manifest (no 'hours')")
    return hours


def save_manifest(out: Path, hours: dict[str, dict[str, int | str]]) -> None:
    """Write the manifest atomically (temporary file, fsync, rename)."""
    tmp = out / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    body = orjson.dumps(
        {"format": "loglens-archive/1", "hours": dict(sorted(hours.items()))}, option=orjson.OPT_INDENT_2
    )
    with tmp.open("wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)


# ---- store side -----------------------------------------------------------------------------
def hours_in_store(con: duckdb.DuckDBPyConnection, since_us: int | None, until_us: int | None) -> list[HourStats]:
    """Hours with logs in [since, until) (rounded out to whole hours), oldest first."""
    lo = (since_us // HOUR_US) * HOUR_US if since_us is not None else None
    hi = -(-until_us // HOUR_US) * HOUR_US if until_us is not None else None
    rows = con.execute(
        "SELECT epoch_us(date_trunc('hour', ts)) AS h, count(*), max(id) FROM logs "
        "WHERE ($1::BIGINT IS NULL OR ts >= make_timestamp($1::BIGINT)) "
        "AND ($2::BIGINT IS NULL OR ts < make_timestamp($2::BIGINT)) GROUP BY h ORDER BY h",
        [lo, hi],
    ).fetchall()
    return [HourStats(int(h), int(n), int(m)) for h, n, m in rows]


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_hour(con: duckdb.DuckDBPyConnection, out: Path, start_us: int) -> tuple[int, int]:
    """Write one hour's logs as Parquet under `out`, replacing any earlier copy.

    Returns (rows, max id) of what was written (read back from the files themselves).
    """
    tmp = out / f".tmp-{hour_key(start_us)}-{uuid.uuid4().hex}"
    # COPY takes no bound parameters: the bounds are integers we computed, the path is quoted.
    query = (
        f"SELECT {', '.join(COLUMNS)}, strftime(ts, '%Y-%m-%d') AS date, strftime(ts, '%H') AS hour FROM logs "
        f"WHERE ts >= make_timestamp({int(start_us)}) AND ts < make_timestamp({int(start_us + HOUR_US)}) "
        "ORDER BY service, ts, id"
    )
    try:
        con.execute(
            f"COPY ({query}) TO {_sql_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd, "
            "PARTITION_BY (date, hour, service), WRITE_PARTITION_COLUMNS true, FILENAME_PATTERN 'part-{uuid}', "
            "ROW_GROUP_SIZE 122880)"
        ).fetchall()
        written = hour_dir(tmp, start_us)
        counted = _count_rows(con, written)
        _swap_in(written, hour_dir(out, start_us))
        return counted
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _count_rows(con: duckdb.DuckDBPyConnection, directory: Path) -> tuple[int, int]:
    if not directory.exists():
        return 0, 0
    row = con.execute(
        "SELECT count(*), coalesce(max(id), 0) FROM read_parquet(?, hive_partitioning = false)",
        [str(directory / "**" / "*.parquet")],
    ).fetchall()
    return int(row[0][0]), int(row[0][1])


def _swap_in(new: Path, final: Path) -> None:
    """Put directory `new` at `final` with renames only: readers see the old hour or the new one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not new.exists():  # the hour has no logs any more: remove the old copy
        new.mkdir(parents=True)
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex}")
    had_old = final.exists()
    if had_old:
        os.rename(final, old)
    os.rename(new, final)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    closed_before_us: int | None = None,
    force: bool = False,
) -> ExportReport:
    """Archive every hour with logs in [since, until) that ends by `closed_before_us`.

    Hours already in the manifest with the same count and max id are skipped (unless `force`).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"{out}: cannot create the archive directory ({exc.strerror})") from None
    manifest = load_manifest(out)
    report = ExportReport()
    for hour in hours_in_store(con, since_us, until_us):
        if closed_before_us is not None and hour.start_us + HOUR_US > closed_before_us:
            continue  # still open: logs may arrive for it
        entry = manifest.get(hour.key)
        if (
            not force
            and entry is not None
            and entry.get("rows") == hour.rows
            and entry.get("max_id") == hour.max_id
            and hour_dir(out, hour.start_us).exists()
        ):
            report.skipped.append(hour.key)
            continue
        rows, max_id = write_hour(con, out, hour.start_us)
        manifest[hour.key] = {
            "rows": rows,
            "max_id": max_id,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        save_manifest(out, manifest)  # after every hour: a crash loses at most the hour in flight
        report.written.append(hour.key)
        report.rows += rows
    return report


def archived_hours(out: Path) -> Iterator[int]:
    """Start (epoch µs) of every hour recorded in the archive's manifest."""
    for key in load_manifest(out):
        yield to_us(datetime.strptime(key, "%Y-%m-%dT%H").replace(tzinfo=UTC))
