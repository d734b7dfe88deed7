"""Anomaly detection: an hour of steady traffic stays quiet; spikes, drops and latency jumps don't."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pyarrow as pa
import pytest

from loglens import metrics
from loglens.config import AnomalyRule
from loglens.demo import generate_logs, make_log
from loglens.detect.anomaly import AnomalyDetector, Finding, Observation, TemplateRates
from loglens.detect.windows import SlidingWindows
from loglens.schema import LogSchema, parse_values

REPO = Path(__file__).resolve().parents[2]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml", allowed_lateness_s=1e9)
T0 = 1_800_000_000.0


def to_table(records: list[dict], arrival: float) -> pa.Table:
    batch = SCHEMA.validate(parse_values(records), "test", int(arrival * 1e6))
    assert not batch.rejections
    return batch.table


class Replay:
    """Event-time driven replay through the same windows + detector the server uses."""

    def __init__(self, rule: AnomalyRule | None = None) -> None:
        self.rule = rule or AnomalyRule()
        self.windows = SlidingWindows()
        self.detector = AnomalyDetector(self.rule_for)  # a bound method: deep copies keep their own rule
        self.started: list[Finding] = []
        self.ended: list[tuple[str, str]] = []

    def rule_for(self, _service: str) -> AnomalyRule:
        return self.rule

    def feed(self, records: list[dict], now: float) -> None:
        if records:
            table = to_table(records, now)
            self.windows.add(table)
            self.detector.add_partials(metrics.aggregate(table))
        self.tick(now)

    def tick(self, now: float) -> None:
        self.windows.prune(now)
        self.detector.close_minutes(now)
        for svc in self.windows.services:
            c = self.windows.counts(svc, now, 60)
            p95, n = self.windows.quantile(svc, now, 60, 0.95)
            s, e = self.detector.evaluate(svc, now, Observation(c.total, c.errors, p95, n))
            self.started.extend(s)
            self.ended.extend((svc, m) for m in e)


def steady(replay: Replay, seconds: int, start: float, per_second: int = 10, seed: int = 3, step: int = 5) -> None:
    """`seconds` of steady traffic, fed (and judged) every `step` seconds of event time."""
    logs = list(generate_logs(seconds * per_second, start=start, spacing_s=1 / per_second, seed=seed))
    for s in range(0, seconds, step):
        replay.feed(logs[s * per_second : (s + step) * per_second], start + s + step - 0.001)


@pytest.fixture(scope="module")
def warm_replay() -> Replay:
    """15 minutes of steady traffic: warm baselines, built once for the module."""
    replay = Replay()
    steady(replay, 15 * 60, T0, step=10)
    return replay


@pytest.fixture
def warm(warm_replay: Replay) -> Replay:
    replay = copy.deepcopy(warm_replay)
    assert replay.started == []
    return replay


def test_one_hour_of_steady_traffic_raises_no_anomaly() -> None:
    replay = Replay()
    steady(replay, 3600, T0, step=10)
    assert replay.detector.baseline_minutes("checkout") >= 58
    assert replay.started == [], [f.description for f in replay.started]


def _burst(service: str, n: int, at: float, level: str = "INFO", rt: float | None = None) -> list[dict]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        rec = make_log(rng, service, level, at + i / n)
        if rt is not None:
            rec["response_time_ms"] = rt
        out.append(rec)
    return out


def test_volume_spike_then_recovery_with_hysteresis(warm: Replay) -> None:
    replay = warm
    now = T0 + 15 * 60
    # 5x the usual volume of one service for 20 seconds
    for s in range(20):
        replay.feed(_burst("search", 60, now + s), now + s + 0.999)
    spikes = [f for f in replay.started if f.metric == "volume"]
    assert spikes and spikes[0].service == "search" and spikes[0].observed > spikes[0].high
    f = spikes[0]
    assert f.score > 3 and 0 < f.confidence < 1
    assert "search: volume" in f.description and "above its usual" in f.description
    assert replay.detector.is_active("search")
    steady(replay, 120, now + 20, seed=9, step=1)
    assert ("search", "volume") in replay.ended
    assert not replay.detector.is_active("search")


def test_volume_drop_is_an_anomaly(warm: Replay) -> None:
    replay = warm
    now = T0 + 15 * 60
    for s in range(60):  # every service but "auth" keeps sending
        replay.feed(
            [r for r in generate_logs(10, start=now + s, spacing_s=0.1, seed=s) if r["service"] != "auth"],
            now + s + 0.999,
        )
    drops = [f for f in replay.started if f.service == "auth" and f.metric == "volume"]
    assert drops and drops[0].observed < drops[0].low
    assert "below its usual" in drops[0].description


def test_latency_and_error_rate_spikes(warm: Replay) -> None:
    replay = warm
    now = T0 + 15 * 60
    for s in range(30):
        batch = list(generate_logs(10, start=now + s, spacing_s=0.1, seed=100 + s))
        for rec in batch:
            if rec["service"] == "payments":
                rec["response_time_ms"] = 2000.0
            if rec["service"] == "auth":
                rec["level"] = "ERROR"
        replay.feed(batch, now + s + 0.999)
    metrics_seen = {(f.service, f.metric) for f in replay.started}
    assert ("payments", "p95_latency") in metrics_seen
    assert ("auth", "error_rate") in metrics_seen


def test_warmup_and_min_baseline_keep_quiet(warm_replay: Replay) -> None:
    for rule in (AnomalyRule(min_baseline_volume=1000), AnomalyRule(warmup_minutes=30)):
        replay = copy.deepcopy(warm_replay)  # every demo service is "quiet" / the history is "young"
        replay.rule = rule
        for s in range(20):
            replay.feed(_burst("search", 300, T0 + 900 + s), T0 + 900 + s + 0.999)
        assert replay.started == []
    control = copy.deepcopy(warm_replay)
    for s in range(20):
        control.feed(_burst("search", 300, T0 + 900 + s), T0 + 900 + s + 0.999)
    assert control.started  # the same burst with the default rule is an anomaly


def test_disabled_rule_and_unknown_service() -> None:
    d = AnomalyDetector(lambda _s: AnomalyRule(enabled=False))
    assert d.evaluate("nobody", T0, Observation(10, 0)) == ([], [])
    assert d.baseline_minutes("nobody") == 0


def test_late_minutes_are_ignored_and_silence_counts_as_zero() -> None:
    d = AnomalyDetector(lambda _s: AnomalyRule(), close_grace_s=0)
    d.add_minute("a", int(T0), 50, 0)
    d.close_minutes(T0 + 300)  # minutes T0 .. T0+240 closed; later ones had no logs
    assert d.baseline_minutes("a") == 5
    d.add_minute("a", int(T0) + 60, 500, 0)  # late data for a closed minute: too late
    d.close_minutes(T0 + 360)
    assert d.baseline_minutes("a") == 6


def test_template_rate_jump() -> None:
    rates = TemplateRates(factor=10, warmup_minutes=5, min_count=20, close_grace_s=0)
    for m in range(10):
        rates.add("t1", int(T0) + 60 * m, 3)
    assert rates.close(T0 + 600) == []
    rates.add("t1", int(T0) + 600, 300)
    jumps = rates.close(T0 + 660)
    assert len(jumps) == 1 and jumps[0].observed == 300 and jumps[0].expected == pytest.approx(3)
    rates.add("t1", int(T0) + 60, 999)  # late: ignored
    assert rates.close(T0 + 660) == []
