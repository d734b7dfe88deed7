"""Threshold rules at their exact boundaries, over real sliding windows (no mocks)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from loglens.config import (
    AbsenceRule,
    AlertsConfig,
    ErrorRateRule,
    RulesConfig,
    ServiceOverride,
    VolumeRule,
)
from loglens.detect import rules
from loglens.detect.rules import RuleWindow
from loglens.detect.windows import SlidingWindows

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def batch(rows: list[tuple[float, str, str]], received: float | None = None, rt: float | None = 50.0) -> pa.Table:
    """Stored-log batch: (event time s, level, service) rows, arrival = `received` or event time."""
    n = len(rows)
    return pa.table(
        {
            "id": pa.array(range(1, n + 1), pa.int64()),
            "ts": pa.array([int(t * 1e6) for t, _, _ in rows], pa.int64()).cast(pa.timestamp("us")),
            "received_at": pa.array(
                [int((received if received is not None else t) * 1e6) for t, _, _ in rows], pa.int64()
            ).cast(pa.timestamp("us")),
            "level": pa.array([lv for _, lv, _ in rows], pa.string()),
            "service": pa.array([s for _, _, s in rows], pa.string()),
            "message": pa.array(["m"] * n, pa.string()),
            "response_time_ms": pa.array([rt] * n, pa.float64()),
        }
    )


def spread(n: int, errors: int, start: float, span: float, service: str = "api") -> list[tuple[float, str, str]]:
    """`n` logs evenly over [start, start + span), the first `errors` of them errors."""
    return [(start + span * i / n, "ERROR" if i < errors else "INFO", service) for i in range(n)]


def error_rate_at(windows: SlidingWindows, rule: ErrorRateRule, now: float, service: str = "api") -> rules.Candidate:
    c = windows.counts(service, now, rule.window_seconds)
    (cand,) = rules.evaluate(rule, RuleWindow(service, now, c.total, c.errors))
    return cand


@pytest.mark.parametrize(("errors", "fires"), [(100, False), (101, True)])
def test_error_rate_boundary_10_percent_vs_10_1(errors: int, fires: bool) -> None:
    w = SlidingWindows()
    w.add(batch(spread(1000, errors, T0, 50)))
    cand = error_rate_at(w, ErrorRateRule(), T0 + 55)
    assert cand.breach is fires
    assert cand.value == pytest.approx(errors / 1000)
    assert cand.severity == "critical"
    if fires:
        assert "10.1%" in cand.summary and "101/1000" in cand.summary


def test_min_events_guard() -> None:
    rule = ErrorRateRule(min_events=20)
    w = SlidingWindows()
    w.add(batch([(T0 + 1, "ERROR", "api")]))
    assert error_rate_at(w, rule, T0 + 2).breach is False  # 1 error out of 1 log pages nobody
    w.add(batch(spread(18, 18, T0 + 2, 5)))
    assert error_rate_at(w, rule, T0 + 8).breach is False  # 19 logs, all errors: still below min_events
    w.add(batch([(T0 + 8, "ERROR", "api")]))
    assert error_rate_at(w, rule, T0 + 9).breach is True  # the 20th log


def test_errors_straddling_a_minute_boundary_fire_in_a_sliding_window() -> None:
    # 30 s before and 30 s after a minute boundary: each calendar minute holds 100 logs with
    # 8 errors (8 % — a tumbling window never fires), but the 60 s around the boundary holds
    # 16 errors in 100 logs.
    w = SlidingWindows()
    quiet_a = spread(50, 0, T0 - 60, 30)
    burst = spread(50, 8, T0 - 30, 30) + [(T0 + i * 0.6, "ERROR" if i < 8 else "INFO", "api") for i in range(50)]
    quiet_b = spread(50, 0, T0 + 30, 30)
    w.add(batch(quiet_a + burst + quiet_b))
    rule = ErrorRateRule()
    for minute_end in (T0 - 0.001, T0 + 59.999):  # the two tumbling minutes
        c = w.counts("api", minute_end, 60)
        assert c.total == 100 and c.errors == 8
        assert not rules.evaluate(rule, RuleWindow("api", minute_end, c.total, c.errors))[0].breach
    cand = error_rate_at(w, rule, T0 + 29.9)
    assert cand.breach and cand.value == pytest.approx(0.16)


def test_window_slides_past_a_burst() -> None:
    w = SlidingWindows()
    w.add(batch(spread(40, 10, T0 + 2, 0.5)))  # all within second T0+2
    rule = ErrorRateRule()
    assert error_rate_at(w, rule, T0 + 10).breach
    assert error_rate_at(w, rule, T0 + 61.9).breach  # window (T0+1, T0+61] still holds second T0+2
    assert not error_rate_at(w, rule, T0 + 62).breach  # the burst has left the window


@pytest.mark.parametrize(("silent", "fires"), [(120.0, False), (121.0, True)])
def test_absence_boundary_on_arrival_time(silent: float, fires: bool) -> None:
    w = SlidingWindows()
    # event time far in the past: silence is judged on arrival time
    w.add(batch([(T0 - 3600, "INFO", "api")], received=T0))
    (cand,) = rules.evaluate(AbsenceRule(), RuleWindow("api", T0 + silent, last_seen=w.last_seen["api"]))
    assert cand.breach is fires
    assert cand.value == pytest.approx(silent)


def test_absence_never_seen_service_does_not_fire() -> None:
    (cand,) = rules.evaluate(AbsenceRule(), RuleWindow("ghost", T0))
    assert cand.breach is False


@pytest.mark.parametrize(("n", "fires"), [(100, False), (101, True)])
def test_volume_boundary(n: int, fires: bool) -> None:
    w = SlidingWindows()
    w.add(batch(spread(n, 0, T0, 59)))
    rule = VolumeRule()
    c = w.counts("api", T0 + 59, rule.window_seconds)
    (cand,) = rules.evaluate(rule, RuleWindow("api", T0 + 59, c.total, c.errors))
    assert c.total == n
    assert cand.breach is fires
    assert cand.severity == "warning"


def test_volume_counts_any_60s_window_across_minute_boundary() -> None:
    w = SlidingWindows()
    w.add(batch(spread(60, 0, T0 - 30, 30) + spread(60, 0, T0, 30)))
    assert w.counts("api", T0 - 0.5, 60).total == 60
    assert w.counts("api", T0 + 29, 60).total == 120


def test_disabled_rule_yields_nothing_and_overrides_apply() -> None:
    assert rules.evaluate(VolumeRule(enabled=False), RuleWindow("api", T0, 1000)) == []
    alerts = AlertsConfig(
        rules=RulesConfig(volume=VolumeRule(threshold=100)),
        overrides={"big": ServiceOverride(volume=VolumeRule(threshold=5000))},
    )
    big = rules.effective_rule(alerts, "volume", "big")
    other = rules.effective_rule(alerts, "volume", "small")
    assert isinstance(big, VolumeRule) and big.threshold == 5000
    assert isinstance(other, VolumeRule) and other.threshold == 100
    assert rules.rule_name(big) == "volume"


def test_future_event_time_is_clamped_to_arrival_and_old_seconds_pruned() -> None:
    w = SlidingWindows(horizon_s=120)
    w.add(batch([(T0 + 200, "INFO", "api")], received=T0))  # client clock 200 s ahead
    assert w.counts("api", T0, 60).total == 1
    w.prune(T0 + 500)
    assert w.counts("api", T0, 60).total == 0
    w.add(batch([(T0 + 100, "INFO", "api")], received=T0 + 500))  # older than the horizon now
    assert w.counts("api", T0 + 100, 60).total == 0
    assert w.last_seen["api"] == T0 + 500
    w.forget("api")
    assert w.services == []


def test_latency_quantile_in_window() -> None:
    w = SlidingWindows()
    rows = spread(100, 0, T0, 50)
    t = batch(rows, rt=None)
    t = t.set_column(
        t.column_names.index("response_time_ms"),
        "response_time_ms",
        pa.array([float(i + 1) for i in range(100)], pa.float64()),
    )
    w.add(t)
    p95, n = w.quantile("api", T0 + 55, 60, 0.95)
    assert n == 100 and p95 == pytest.approx(95, rel=0.03)
    assert w.quantile("other", T0 + 55, 60, 0.95) == (None, 0)
    # many small batches in one second are compacted on prune without changing the result
    for _ in range(40):
        w.add(batch([(T0 + 56, "INFO", "api")], rt=500.0))
    w.prune(T0 + 57)
    p95b, nb = w.quantile("api", T0 + 57, 60, 0.95)
    assert nb == 140 and p95b is not None and p95b > p95


def test_default_error_rate_rule_is_the_seeds_10_percent_in_a_minute() -> None:
    """5 errors out of 10 logs in a minute fire; 1 out of 200 and 1 out of 1 do not."""
    rule = AlertsConfig().rules.error_rate
    assert rule.window_seconds == 60 and rule.threshold == 0.1

    def fires(errors: int, total: int) -> bool:
        [c] = rules.evaluate(rule, RuleWindow("api", 0.0, total, errors, 0.0))
        return c.breach

    assert fires(5, 10)
    assert not fires(1, 200)
    assert not fires(1, 1)
    assert fires(21, 200)
