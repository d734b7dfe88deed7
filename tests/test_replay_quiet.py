"""The event-time replay skips quiet seconds (`alerting/quiet.py`) with results identical to
ticking every second: every transition (with the alert's value, summary and times) and every
anomaly document. A replay with an `on_second` hook ticks every second, so it is the reference."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from loglens.alerting.replay import ReplayResult, replay
from loglens.analyze.aggregate import AGG_COLUMNS, Window, aggregate
from loglens.config import parse_settings

T0 = 1_699_999_980  # a minute boundary in the past


def traffic(seed: int, minutes: int = 30) -> pa.Table:
    """Four services with noisy traffic, an error burst, an outage, a volume burst and rare spikes."""
    rnd = random.Random(seed)
    ts: list[datetime] = []
    level: list[str] = []
    service: list[str] = []
    for s in range(minutes * 60):
        for svc in ("s0", "s1", "s2", "s3"):
            rate = rnd.choice([0, 1, 1, 2, 3]) if rnd.random() > 0.002 else rnd.randint(20, 200)
            if svc == "s0" and 700 < s < 900:
                rate = 0  # outage
            if svc == "s1" and 1200 < s < 1300:
                rate = 8  # burst
            for i in range(rate):
                error = rnd.random() < (0.5 if svc == "s2" and 500 < s < 600 else 0.05)
                ts.append(datetime.fromtimestamp(T0 + s + i / rate, UTC).replace(tzinfo=None))
                level.append("ERROR" if error else "INFO")
                service.append(svc)
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us")),
            "level": level,
            "service": service,
            "user_id": pa.nulls(n, pa.string()),
            "response_time_ms": pa.array([50.0] * n),
            "late": [False] * n,
        }
    )


CONFIGS = [
    "{}",
    "alerts:\n  rules:\n    volume: {threshold: 150, for_seconds: 5}\n    error_rate: {threshold: 0.2, for_seconds: 3}\n"
    "  resolve_after_seconds: 30\n",
    "alerts:\n  rules:\n    absence: {threshold_seconds: 30}\n  series_idle_seconds: 120\n",
    "alerts:\n  overrides: {s1: {volume: {threshold: 400}}}\n"
    "  rules:\n    anomaly: {k: 2.0, exit_k: 1.0, warmup_minutes: 5}\n",
]


def facts(result: ReplayResult) -> tuple[list[tuple[str, object]], list[dict[str, object]]]:
    return [(t.kind, t.alert) for t in result.transitions], result.anomalies


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", [1, 2])
def test_skipping_quiet_seconds_changes_nothing(config: str, seed: int) -> None:
    settings = parse_settings(config, base_dir=Path(__file__).resolve().parents[1])
    con = duckdb.connect()
    con.register("logs", traffic(seed))
    agg = aggregate(con, f"SELECT {', '.join(AGG_COLUMNS)} FROM logs", [], Window())
    skipping = replay(settings, agg.seconds, agg.partials)
    every_second = replay(settings, agg.seconds, agg.partials, on_second=lambda ev, s: None)
    assert every_second.transitions, "the data raises alerts"
    assert facts(skipping) == facts(every_second)
