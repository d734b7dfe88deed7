"""`loglens backtest`: replay archived logs through the live rules and state machine, in event time.

The archive is read with `loglens analyze`'s reader (one archive reader), validated, counted per (service, second) and aggregated per minute, then handed
to `loglens.alerting.replay` — the same evaluator, candidate builders and `AlertEngine` as the
server and as `loglens analyze`, with a clock that follows the logs' own timestamps and no store
or notifier. Here the replay also sees response times (p95 latency anomalies) and mines log
templates (new_pattern alerts), which `analyze` cannot: it only has aggregates. The result is
the list of alerts that would have fired, when, and for how long, so thresholds can be tuned
before they page anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.alerting.engine import Transition, to_dt
from loglens.alerting.evaluator import Evaluator
from loglens.alerting.replay import per_second, replay
from loglens.analyze import inputs
from loglens.config import Settings
from loglens.detect.pattern_worker import PatternWorker
from loglens.detect.validator import AnomalyValidator
from loglens.models import LOG_ARROW_SCHEMA, iso
from loglens.schema import LogSchema


@dataclass
class BacktestResult:
    """What a replay found."""

    logs: int = 0
    rejected: int = 0
    start: float | None = None
    end: float | None = None
    transitions: list[Transition] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def episodes(self) -> list[dict[str, Any]]:
        """One row per alert that fired: rule, service, severity, fired/resolved times, duration."""
        rows: dict[str, dict[str, Any]] = {}
        for t in self.transitions:
            a = t.alert
            if t.kind == "firing" and a.id not in rows:
                rows[a.id] = {
                    "rule": a.rule,
                    "service": a.service,
                    "severity": a.severity,
                    "fired_at": iso(a.fired_at),
                    "resolved_at": None,
                    "duration_seconds": None,
                    "summary": a.summary,
                }
            elif t.kind == "resolved" and a.id in rows:
                rows[a.id]["resolved_at"] = iso(a.resolved_at)
                rows[a.id]["duration_seconds"] = t.duration_seconds
        return list(rows.values())


def load_table(settings: Settings, paths: list[Path]) -> tuple[pa.Table, int]:
    """Read and validate every record with `loglens analyze`'s reader (NDJSON, JSON arrays, .gz,
    Parquet, directories and globs), with huge lateness/skew limits since it is an archive;
    sorted by event time, arrival = event time. Returns (table, rejected records)."""
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12, max_future_skew_s=1e12)
    tables: list[pa.Table] = []
    rejected = 0
    for part in inputs.plan(inputs.discover(paths), 1):
        if part.kind == "store":
            raise inputs.InputError(f"{part.path}: backtest replays archives, not a store (use loglens analyze)")
        for block in inputs.read_blocks(part):
            batch = schema.validate(block.parsed, "backtest", 0)
            rejected += len(batch.rejections)
            if batch.table.num_rows:
                tables.append(batch.table)
    if not tables:
        return LOG_ARROW_SCHEMA.empty_table(), rejected
    t = pa.concat_tables(tables)
    t = t.take(pc.sort_indices(t, [("ts", "ascending")]))
    t = t.set_column(t.column_names.index("received_at"), "received_at", t["ts"])  # arrival = event time
    t = t.set_column(t.column_names.index("late"), "late", pa.array(np.zeros(t.num_rows, dtype=bool)))
    return t, rejected


def run_backtest(settings: Settings, paths: list[Path], *, patterns: bool = True) -> BacktestResult:
    """Replay `paths` through the rules; returns every firing/resolved transition."""
    table, rejected = load_table(settings, paths)
    result = BacktestResult(logs=table.num_rows, rejected=rejected)
    if table.num_rows == 0:
        return result
    secs = pc.divide(pc.cast(table["ts"], pa.int64()), 1_000_000).to_numpy()
    start = int(secs[0])
    bounds = np.searchsorted(secs, np.arange(start, int(secs[-1]) + 2), side="left")
    with_ids = table.add_column(0, "id", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))
    miner: list[PatternWorker] = []

    def on_second(ev: Evaluator, sec: int) -> None:
        lo, hi = int(bounds[sec - start]), int(bounds[sec - start + 1])
        if hi <= lo:
            return
        batch = with_ids.slice(lo, hi - lo)
        ev.windows.add_latency(batch)
        if patterns:
            if not miner:
                miner.append(PatternWorker(settings.alerts, ev.handle_pattern, clock=ev.clock))
            miner[0].process(batch)

    found = replay(
        settings,
        per_second(table),
        metrics.aggregate(table),
        validator=AnomalyValidator(settings.schemas.anomaly),
        on_second=on_second,
    )
    result.start, result.end = found.start, found.end
    result.transitions = found.transitions
    result.anomalies = found.anomalies
    result.alerts = found.alerts()
    return result


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "still firing at the end"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_report(result: BacktestResult) -> list[str]:
    """Human-readable lines: every transition in order, then one line per alert."""
    lines = [
        f"replayed {result.logs} logs ({result.rejected} rejected) from {iso_s(result.start)} to {iso_s(result.end)}"
    ]
    for t in result.transitions:
        a = t.alert
        when = a.fired_at if t.kind == "firing" else a.resolved_at
        extra = f" after {_duration(t.duration_seconds)}" if t.kind == "resolved" else ""
        lines.append(f"{iso(when)}  {t.kind.upper():8} {a.severity:8} {a.rule:11} {a.service}{extra}  {a.summary}")
    episodes = result.episodes()
    lines.append(f"{len(episodes)} alert(s) would have fired, {len(result.anomalies)} anomaly(ies) found")
    for e in episodes:
        lines.append(f"  {e['rule']:11} {e['service']:20} fired {e['fired_at']}  {_duration(e['duration_seconds'])}")
    return lines


def iso_s(epoch: float | None) -> str | None:
    """ISO time of epoch seconds (None stays None)."""
    return iso(to_dt(epoch)) if epoch is not None else None
