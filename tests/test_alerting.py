"""The alert state machine with an injectable clock, and its persistence in a real DuckDB store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loglens.alerting import AlertEngine, Silence, alert_json
from loglens.config import AlertsConfig
from loglens.detect.rules import Candidate
from loglens.models import Alert
from loglens.store import Store
from loglens.store.alerts import AlertRepository, AlertWriter

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A notifier stand-in with the real submit() signature, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, float | None]] = []

    def submit(self, alert: Alert, kind: str, duration: float | None = None) -> None:
        self.calls.append((alert.rule, alert.service, kind, duration))


def cand(rule: str, service: str, breach: bool, value: float = 0.5, for_s: float = 0.0) -> Candidate:
    return Candidate(rule, service, breach, value, 0.1, "critical", f"{rule} {service} {value}", for_s)


def engine(clock: Clock, notify: Recorder, repo: AlertRepository | None = None, **cfg: Any) -> AlertEngine:
    writer = AlertWriter(repo) if repo is not None else None
    return AlertEngine(AlertsConfig(**cfg), clock=clock, sink=notify, persistence=writer, silence_store=repo)


def test_fire_once_then_resolve_with_duration() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    [t] = eng.observe([cand("error_rate", "api", True)])
    assert t.kind == "firing" and t.notified
    clock.t += 5
    assert eng.observe([cand("error_rate", "api", True, 0.6)]) == []  # dedup: same (rule, service)
    assert eng.get("error_rate", "api").value == 0.6
    clock.t += 25
    [r] = eng.observe([cand("error_rate", "api", False)])
    assert r.kind == "resolved" and r.duration_seconds == pytest.approx(30)
    assert rec.calls == [("error_rate", "api", "firing", None), ("error_rate", "api", "resolved", 30.0)]
    assert eng.active() == []
    assert eng.observe([cand("error_rate", "api", False)]) == []


def test_for_duration_pending_then_firing_and_pending_dropped_quietly() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    [p] = eng.observe([cand("volume", "api", True, for_s=10)])
    assert p.kind == "pending" and eng.get("volume", "api").state == "pending"
    clock.t += 9.9
    assert eng.observe([cand("volume", "api", True, for_s=10)]) == []
    clock.t += 0.1
    [f] = eng.observe([cand("volume", "api", True, for_s=10)])
    assert f.kind == "firing" and f.alert.fired_at.timestamp() == pytest.approx(T0 + 10)
    # a pending alert whose breach ends before `for` passes is dropped without any notification
    eng.observe([cand("volume", "web", True, for_s=10)])
    clock.t += 1
    assert eng.observe([cand("volume", "web", False, for_s=10)]) == []
    assert [c for c in rec.calls if c[1] == "web"] == []


def test_silence_mutes_then_expiry_releases_still_firing_alert() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    s = eng.add_silence({"service": "api", "rule": "error_rate"}, T0 + 60, "deploy", "ops")
    [t] = eng.observe([cand("error_rate", "api", True)])
    assert t.kind == "firing" and not t.notified and rec.calls == []
    assert eng.is_suppressed(t.alert)
    eng.observe([cand("error_rate", "web", True)])  # not matched by the silence
    assert rec.calls == [("error_rate", "web", "firing", None)]
    assert [x.id for x in eng.silences()] == [s.id]
    clock.t += 60
    released = eng.tick()
    assert [x.alert.service for x in released] == ["api"]
    assert rec.calls[-1] == ("error_rate", "api", "firing", None)
    assert eng.silences() == []


def test_resolve_of_a_never_notified_alert_is_not_notified_and_delete_silence_releases() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    s = eng.add_silence({"service": "api"}, T0 + 3600)
    eng.observe([cand("volume", "api", True)])
    clock.t += 10
    [r] = eng.observe([cand("volume", "api", False)])
    assert r.kind == "resolved" and not r.notified and rec.calls == []
    eng.observe([cand("volume", "api", True)])
    assert eng.delete_silence(s.id) is True
    assert rec.calls == [("volume", "api", "firing", None)]
    assert eng.delete_silence("nope") is False


def test_absence_inhibits_error_rate_and_volume_of_the_same_service() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    eng.observe([cand("absence", "api", True)])
    [er] = eng.observe([cand("error_rate", "api", True), cand("error_rate", "web", False)])
    assert not er.notified
    eng.observe([cand("volume", "web", True)])  # other services are not inhibited
    assert ("volume", "web", "firing", None) in rec.calls
    assert ("error_rate", "api", "firing", None) not in rec.calls
    clock.t += 5
    out = eng.observe([cand("absence", "api", False)])  # the service is back, its error rate still bad
    assert [t.kind for t in out] == ["resolved", "firing"]
    assert rec.calls[-1] == ("error_rate", "api", "firing", None)


def test_reads_use_a_snapshot_and_never_wait_for_an_evaluation() -> None:
    import threading

    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec)
    eng.observe([cand("absence", f"svc-{i}", True) for i in range(2000)])
    entered, release = threading.Event(), threading.Event()

    class SlowSink(Recorder):
        def submit(self, alert: Alert, kind: str, duration: float | None = None) -> None:
            entered.set()
            release.wait(30)

    eng.sink = SlowSink()
    worker = threading.Thread(target=lambda: eng.observe([cand("volume", "x", True)]))
    worker.start()
    assert entered.wait(30)  # the evaluator is inside a notification hand-over...
    assert len(eng.active()) == 2001  # ...and readers still answer from the snapshot
    assert eng.is_suppressed(eng.get("volume", "x")) is False  # type: ignore[arg-type]
    assert eng.silences() == []
    release.set()
    worker.join(30)


def test_damped_resolve_completes_on_tick_without_another_candidate() -> None:
    clock, rec = Clock(), Recorder()
    eng = engine(clock, rec, resolve_after_seconds=10)
    eng.observe([cand("new_pattern", "api", True)])
    clock.t += 300
    assert eng.observe([cand("new_pattern", "api", False)]) == []  # one clear signal, then silence
    clock.t += 9
    assert eng.tick() == []
    clock.t += 1
    [r] = eng.tick()
    assert r.kind == "resolved" and r.alert.rule == "new_pattern"
    assert rec.calls[-1] == ("new_pattern", "api", "resolved", 310.0)


def test_meta_alerts_and_a_failing_notifier_do_not_break_alerting() -> None:
    clock = Clock()

    class Broken:
        def submit(self, alert: Alert, kind: str, duration: float | None = None) -> None:
            raise RuntimeError("outbox down")

    published: list[tuple[str, Any]] = []
    eng = AlertEngine(AlertsConfig(), clock=clock, sink=Broken(), publish=lambda k, d: published.append((k, d)))
    eng.raise_meta("notifier:slack", "slack failed 8 times", "warning")
    eng.raise_meta("notifier:slack", "slack failed 9 times", "warning")  # once per outage
    assert [a.rule for a in eng.active()] == ["meta"]
    eng.resolve_meta("notifier:slack")
    assert eng.active() == []
    assert [d["state"] for k, d in published if k == "alert"] == ["firing", "resolved"]


def test_silence_matching_and_json() -> None:
    a = Alert(
        "x",
        "volume",
        "api",
        "warning",
        "firing",
        1.0,
        2.0,
        "s",
        started_at=__import__("datetime").datetime.now(),
        labels={"team": "core"},
    )
    s = Silence("1", {"team": "core", "severity": "warning"}, T0, T0 + 10)
    assert s.matches(a) and s.active(T0) and not s.active(T0 + 10)
    assert not Silence("2", {"service": "web"}, T0, T0 + 10).matches(a)
    j = s.to_json()
    assert j["expires_at"].endswith("Z") and j["matchers"] == {"team": "core", "severity": "warning"}
    aj = alert_json(a)
    assert set(aj) >= {
        "id",
        "rule",
        "service",
        "severity",
        "state",
        "value",
        "threshold",
        "summary",
        "started_at",
        "fired_at",
        "resolved_at",
        "labels",
    }


def test_persistence_and_restore_without_renotifying(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    clock, rec = Clock(), Recorder()
    with Store(path) as store:
        repo = AlertRepository(store.cursor)
        eng = engine(clock, rec, repo=repo)
        eng.observe([cand("error_rate", "api", True), cand("volume", "web", True, for_s=60)])
        s = eng.add_silence({"service": "db"}, T0 + 3600, "maint", "me")
        eng.add_silence({"service": "old"}, T0 + 1)
        eng.observe([cand("absence", "db", True)])  # silenced: firing but not notified
        assert len(rec.calls) == 1
        writer = eng.persistence
        assert isinstance(writer, AlertWriter)
        writer.save_anomaly(
            {"id": "a" * 32, "type": "volume_spike", "severity": "warning", "service": "api", "score": 4.0}, T0
        )
        writer.flush()  # one transaction for everything queued
        repo.close()

    clock.t += 30
    rec2 = Recorder()
    with Store(path) as store:
        repo = AlertRepository(store.cursor)
        eng2 = engine(clock, rec2, repo=repo)
        assert eng2.restore(repo.load_active(), repo.load_silences()) == 3
        assert rec2.calls == []  # a restart re-notifies nothing
        assert {(a.rule, a.service, a.state) for a in eng2.active()} == {
            ("error_rate", "api", "firing"),
            ("volume", "web", "pending"),
            ("absence", "db", "firing"),
        }
        assert eng2.observe([cand("error_rate", "api", True)]) == []  # still the same alert
        assert [x.id for x in eng2.silences()] == [s.id]
        clock.t += 30
        [r] = eng2.observe([cand("error_rate", "api", False)])
        assert r.duration_seconds == pytest.approx(60)
        assert rec2.calls == [("error_rate", "api", "resolved", 60.0)]
        # the silenced absence alert resolves quietly: its firing was never notified
        eng2.observe([cand("absence", "db", False)])
        assert len(rec2.calls) == 1
        writer2 = eng2.persistence
        assert isinstance(writer2, AlertWriter)
        writer2.flush()
        assert [a.state for a in repo.list_alerts("resolved", 10).items] == ["resolved", "resolved"]
        first = repo.list_alerts(None, 2)
        assert len(first.items) == 2 and first.next_offset == 2
        rest = repo.list_alerts(None, 2, first.next_offset)
        assert len(rest.items) == 1 and rest.next_offset is None
        assert repo.list_anomalies(10).items[0]["score"] == 4.0
        assert repo.list_anomalies(10, service="web").items == []
        repo.close()


def test_fires_at_once_when_the_clock_rounds_up_to_the_next_microsecond() -> None:
    clock, rec = Clock(T0 + 0.9999997), Recorder()  # datetime rounds this up to T0 + 1.000000
    eng = engine(clock, rec)
    [t] = eng.observe([cand("anomaly", "api", True)])
    assert t.kind == "firing" and rec.calls == [("anomaly", "api", "firing", None)]


def test_resolve_after_seconds_damps_flapping() -> None:
    from loglens.alerting import AlertEngine
    from loglens.config import AlertsConfig
    from loglens.detect.rules import Candidate

    now = [1000.0]
    engine = AlertEngine(AlertsConfig(resolve_after_seconds=10), clock=lambda: now[0])

    def cand(breach: bool) -> Candidate:
        return Candidate("error_rate", "api", breach, 0.2 if breach else 0.05, 0.1, "critical", "s")

    assert [t.kind for t in engine.observe([cand(True)])] == ["firing"]
    now[0] += 1
    assert engine.observe([cand(False)]) == []  # clear for 0 s: still firing
    now[0] += 5
    assert engine.observe([cand(True)]) == []  # breached again: the clear clock restarts
    now[0] += 1
    assert engine.observe([cand(False)]) == []
    now[0] += 9.5
    assert engine.observe([cand(False)]) == []  # clear for 9.5 s
    now[0] += 0.5
    assert [t.kind for t in engine.observe([cand(False)])] == ["resolved"]
    assert engine.get("error_rate", "api") is None
