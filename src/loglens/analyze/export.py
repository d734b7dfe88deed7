"""`loglens export`: archive the store's closed hours as hive-partitioned Parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from loglens.analyze.command import parse_time
from loglens.config import Settings
from loglens.schema import now_us
from loglens.store.archive import ArchiveError, export, to_us


def export_command(
    settings: Settings,
    out: Path | None,
    *,
    since: str | None = None,
    until: str | None = None,
    store_path: Path | None = None,
    include_open: bool = False,
    force: bool = False,
) -> int:
    """Export and print a summary; returns the exit code (2 = bad usage, store or directory)."""
    store = store_path or settings.storage.path
    target = out or settings.archive.directory
    try:
        since_dt, until_dt = parse_time(since, "--since"), parse_time(until, "--until")
        if since_dt and until_dt and since_dt >= until_dt:
            raise ValueError("--since must be before --until")
        if not Path(store).exists():
            raise ValueError(f"{store}: no such store file (storage.path, or --store)")
        try:
            con = duckdb.connect(str(store), read_only=True)
        except duckdb.Error as exc:
            raise ValueError(
                f"{store}: cannot open the store read-only ({exc}); while `loglens serve` runs on it, "
                "let the server archive (archive.enabled: true) or stop it first"
            ) from None
        # Hours still open (or within the configured delay) are left out unless asked for:
        # logs may still arrive for them.
        closed = None if include_open else now_us() - int(settings.archive.delay_seconds * 1e6)
        with con:
            report = export(
                con,
                target,
                since_us=to_us(since_dt) if since_dt else None,
                until_us=to_us(until_dt) if until_dt else None,
                closed_before_us=closed,
                force=force,
            )
    except (ValueError, ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"exported {len(report.written)} hour(s), {report.rows:,} logs to {target}; "
        f"{len(report.skipped)} hour(s) already archived and unchanged"
    )
    return 0
