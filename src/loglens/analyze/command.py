"""`loglens analyze`: turn CLI options into an analysis run and print/write the report."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from loglens.analyze.driver import AnalyzeOptions, run_analysis
from loglens.analyze.engines import ENGINES
from loglens.analyze.inputs import InputError
from loglens.analyze.report import render_text, write_report
from loglens.config import Settings
from loglens.timeparse import TimestampError, parse_instant


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or date-time; no offset means UTC. ValueError names the option."""
    if text is None:
        return None
    try:
        return parse_instant(text)  # the one timestamp parser: same rules and range as the server
    except TimestampError as exc:
        raise ValueError(f"{option}: {exc}") from None


def analyze_command(
    settings: Settings,
    paths: list[str],
    *,
    engine: str = "local",
    address: str | None = None,
    partitions: int | None = None,
    since: str | None = None,
    until: str | None = None,
    service: str | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> int:
    """Run and report; returns the exit code (2 = bad usage or inputs, 0 = done)."""
    try:
        if engine not in ENGINES:
            raise ValueError(f"--engine: unknown engine {engine!r} (choose one of: {', '.join(ENGINES)})")
        if engine == "local" and address:
            raise ValueError("--address: only the dask and ray engines connect to a cluster")
        if partitions is not None and partitions < 1:
            raise ValueError("--partitions: must be at least 1")
        if out is not None and out.suffix.lower() not in (".json", ".html", ".htm"):
            raise ValueError(f"--out: {out} must end in .json or .html")
        options = AnalyzeOptions(
            paths=paths,
            engine=engine,
            address=address,
            partitions=partitions,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            service=service,
            progress=progress,
        )
        report = run_analysis(settings, options)
    except (ValueError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_text(report))
    if out is not None:
        write_report(report, out)
        print(f"report written to {out}")
    return 0
