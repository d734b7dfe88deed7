"""`loglens analyze`: turn CLI options into an analysis run and print/write the report.

The run happens in a worker thread while the main thread waits for it, so Ctrl-C and SIGTERM are
handled at once even while a library call blocks (a DuckDB query, `ray.init`): the engine is
told to abort, and the process exits with 130 at most `STOP_GRACE_S` later, whatever is stuck.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from loglens.analyze.driver import AnalyzeOptions, run_analysis
from loglens.analyze.engines import ENGINES, Engine, EngineError, make_engine
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


STOP_GRACE_S = 1.5


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _hard_exit(code: int) -> None:
    """Leave now (flushing our output): a library thread may be blocked beyond recall."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_interruptibly(settings: Settings, options: AnalyzeOptions, engine: Engine) -> dict[str, Any]:
    """Run the analysis on `engine` in a thread; Ctrl-C/SIGTERM abort it within STOP_GRACE_S."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with engine:
                box["report"] = run_analysis(settings, options, engine)
        except BaseException as exc:  # handed to the main thread below
            box["error"] = exc

    thread = threading.Thread(target=work, name="loglens-analyze", daemon=True)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        print(f"interrupted: stopping the {engine.name} engine", file=sys.stderr)
        aborter = threading.Thread(target=engine.abort, daemon=True)
        aborter.start()
        thread.join(STOP_GRACE_S)
        _hard_exit(130)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if "error" in box:
        raise box["error"]
    report: dict[str, Any] = box["report"]
    return report


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
        report = run_interruptibly(settings, options, make_engine(engine, address))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.stuck:
            _hard_exit(2)  # a connect call is still blocked in its thread: do not wait for it
        return 2
    except (ValueError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the file first: output piped into `head` closes stdout early, and the report must not depend on it
    if out is not None:
        write_report(report, out)
    print(render_text(report))
    if out is not None:
        print(f"report written to {out}")
    return 0
