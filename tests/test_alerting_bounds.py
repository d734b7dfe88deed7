"""Bounds of the alerting stage: the series cap, idle expiry, one anomaly per episode, bounded
queues with counted overflow, and the meta-alert relay — with an injected clock, no server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from loglens import metrics
from loglens.alerting import AlertEngine
from loglens.alerting.evaluator import SERIES_META, Evaluator
from loglens.alerting.scheduler import BEHIND_META, Scheduler, restore
from loglens.config import Settings
from loglens.detect.anomaly import Finding
from loglens.detect.rules import Candidate
from loglens.detect.validator import AnomalyValidator
from loglens.models import Alert, AlertRow
from loglens.ports import MetaAlertRelay
from loglens.store import CommitEvent, Store
from loglens.store.alerts import AlertRepository, AlertWriter

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def submit(self, alert: Alert, kind: str, duration: float | None = None) -> None:
        self.calls.append((alert.rule, alert.service, kind))


def logs(services: list[str], t: float, level: str = "INFO") -> pa.Table:
    n = len(services)
    us = pa.array([int(t * 1e6)] * n, pa.int64()).cast(pa.timestamp("us"))
    return pa.table(
        {
            "ts": us,
            "received_at": us,
            "level": pa.array([level] * n),
            "service": pa.array(services),
            "message": pa.array(["m"] * n),
            "user_id": pa.nulls(n, pa.string()),
            "ip_address": pa.nulls(n, pa.string()),
            "response_time_ms": pa.array([10.0] * n),
            "trace_id": pa.nulls(n, pa.string()),
            "metadata": pa.nulls(n, pa.string()),
            "late": pa.array([False] * n),
            "source": pa.array(["t"] * n),
        }
    )


def make(settings: Settings, clock: Clock, sink: Sink, **kw: object) -> Evaluator:
    engine = AlertEngine(settings.alerts, clock=clock, sink=sink)
    validator = AnomalyValidator(REPO / "schemas" / "anomaly_schema.yaml")
    return Evaluator(settings, engine, clock=clock, validator=validator, **kw)  # type: ignore[arg-type]


def fold(ev: Evaluator, t: pa.Table) -> list[str]:
    return ev.fold(t, metrics.aggregate(t))


def test_series_cap_leaves_new_names_out_and_raises_its_meta_alert_once(
    settings_factory: Callable[..., Settings],
) -> None:
    clock, sink = Clock(), Sink()
    ev = make(settings_factory("alerts: {max_series: 3}"), clock, sink)
    assert fold(ev, logs(["a", "b", "a", "c", "d", "e"], T0)) == ["a", "b", "c"]
    assert ev.tracked == 3 and ev.series.rejected_logs == 2 and ev.series.rejected_names == 2
    assert fold(ev, logs(["f", "a"], T0)) == ["a"]  # known names keep flowing
    assert ev.detector.services == 3
    metas = [c for c in sink.calls if c[0] == "meta"]
    assert metas == [("meta", SERIES_META, "firing")]  # once, not per batch


def test_idle_services_expire_their_alerts_resolve_and_the_registry_is_told(
    settings_factory: Callable[..., Settings],
) -> None:
    clock, sink = Clock(), Sink()
    expired: list[list[str]] = []
    ev = make(
        settings_factory("alerts: {series_idle_seconds: 600, max_series: 2}"), clock, sink, on_expire=expired.append
    )
    fold(ev, logs(["old", "busy", "late"], T0))  # "late" is over the cap of 2
    assert [c for c in sink.calls if c[0] == "meta"] == [("meta", SERIES_META, "firing")]
    for step in range(1, 700):
        clock.t = T0 + step
        if step % 30 == 0:
            fold(ev, logs(["busy"], clock.t))
        ev.tick()
    assert ("absence", "old", "firing") in sink.calls
    assert expired == [["old"]] and "old" not in ev.windows and ev.series.expired == 1
    assert sink.calls[-2:] == [("absence", "old", "resolved"), ("meta", SERIES_META, "resolved")]
    assert ev.engine.get("absence", "old") is None


def test_an_anomaly_that_flaps_is_one_episode_one_document(settings_factory: Callable[..., Settings]) -> None:
    clock, sink = Clock(), Sink()
    ev = make(settings_factory(), clock, sink)
    rule = ev._anomaly_rule("api")

    def finding(at: float, observed: float) -> Finding:
        return Finding("api", "p95_latency", observed, 50.0, 10.0, 90.0, 6.0, 30, at)

    ev._start_episode(finding(T0, 400.0), rule, T0)
    first = ev.anomalies[0]
    ev._episodes[("api", "p95_latency")] = (first, T0 + 20)  # ended 20 s later...
    ev._start_episode(finding(T0 + 30, 500.0), rule, T0 + 30)  # ...and is back 10 s after that
    assert len(ev.anomalies) == 1 and ev.anomalies[0]["id"] == first["id"]
    assert ev.anomalies[0]["observed"] == 500.0 and ev.anomalies[0]["window"]["start"] == first["window"]["start"]
    ev._episodes[("api", "p95_latency")] = (ev.anomalies[0], T0 + 40)
    ev._start_episode(finding(T0 + 1000, 450.0), rule, T0 + 1000)  # much later: a new episode
    assert len(ev.anomalies) == 2 and ev.anomalies[0]["id"] != first["id"]


def test_evaluator_queue_is_bounded_counts_drops_and_alerts(settings_factory: Callable[..., Settings]) -> None:
    clock, sink = Clock(), Sink()
    ev = make(settings_factory(), clock, sink)
    sched = Scheduler(ev, max_queue_logs=10)
    t = logs(["a"] * 6, T0)
    event = CommitEvent(t, metrics.aggregate(t), 0, 0)
    sched.on_commit(event)
    sched.on_commit(event)  # 12 > 10: left out of alerting, counted, alerted once
    sched.on_commit(event)
    assert sched.dropped == 12 and sched.queued_logs == 6
    assert [c for c in sink.calls if c[0] == "meta"] == [("meta", BEHIND_META, "firing")]


def test_alert_writer_is_bounded_and_batches_into_one_transaction(tmp_path: Path) -> None:
    overflows: list[int] = []
    with Store(tmp_path / "s.duckdb") as store:
        repo = AlertRepository(store.cursor)
        writer = AlertWriter(repo, max_rows=100, on_overflow=overflows.append)
        from loglens.detect.documents import to_dt

        rows = [
            AlertRow(Alert(f"id-{i}", "absence", f"s{i}", "critical", "firing", 1.0, 2.0, "x", to_dt(T0)), True, T0)
            for i in range(150)
        ]
        writer.save_alerts(rows[:80])
        writer.save_alerts(rows[80:])  # 150 > 100: the oldest 50 are dropped, once alerted
        assert writer.dropped == 50 and overflows == [50]
        writer.start()
        assert writer.wait_idle(30)
        writer.stop()
        assert writer.written == 100
        assert len(repo.load_active()) == 100
        repo.close()


def test_meta_alert_relay_keeps_early_raises_until_bound() -> None:
    relay = MetaAlertRelay()
    relay.raise_meta("store", "disk full", "critical")
    relay.raise_meta("notifier:a", "failing")
    relay.resolve_meta("notifier:a")
    clock, sink = Clock(), Sink()
    engine = AlertEngine(Settings().alerts, clock=clock, sink=sink)
    relay.bind(engine)
    assert sink.calls == [("meta", "store", "firing")]
    relay.resolve_meta("store")
    assert sink.calls[-1] == ("meta", "store", "resolved")
    relay.bind(None)
    relay.raise_meta("x", "y")  # unbound again: kept, nothing raised
    assert len(sink.calls) == 2


def test_a_restored_new_pattern_alert_resolves(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    """Across a restart the miner's finding times are gone; the alert still clears and resolves."""
    settings = settings_factory(
        "alerts: {resolve_after_seconds: 10, rules: {new_pattern: {resolve_after_seconds: 60}}}"
    )
    clock, sink = Clock(), Sink()
    before = make(settings, clock, sink)
    before.engine.observe([Candidate("new_pattern", "api", True, None, None, "warning", "x")])
    restored = make(settings, clock, sink)
    restored.engine.restore([(a, True) for a in before.engine.active()])
    with Store(tmp_path / "empty.duckdb") as store:
        restore(restored, store)
    for step in range(1, 80):
        clock.t = T0 + step
        restored.tick()
    assert sink.calls[-1] == ("new_pattern", "api", "resolved")
    assert restored.engine.get("new_pattern", "api") is None
