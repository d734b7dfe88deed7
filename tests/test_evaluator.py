"""The evaluator wired into a real server: commits → alerts → webhook, API, restart; and the
evaluator on its own with an injectable clock (absence once per outage, patterns, anomalies)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from loglens import metrics
from loglens.alerting import AlertEngine
from loglens.alerting.evaluator import Evaluator
from loglens.alerting.scheduler import Scheduler
from loglens.config import Settings
from loglens.detect.pattern_worker import PatternWorker
from loglens.detect.validator import AnomalyValidator
from loglens.models import Alert
from loglens.store import CommitEvent, Store
from loglens.store.alerts import AlertRepository, AlertWriter

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0


class Receiver:
    """A loopback webhook receiver recording each JSON body with its arrival time."""

    def __init__(self) -> None:
        self.bodies: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.cond:
                    outer.bodies.append((time.monotonic(), json.loads(body)))
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, b in self.bodies:
                    if pred(b):
                        return t, b
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching webhook in {timeout} s: {self.bodies}")
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _alert_of(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("alert", body)


def logs_now(service: str, n: int, errors: int, message: str = "request served in 5 ms") -> bytes:
    now = datetime.now(UTC).isoformat()
    recs = [
        {
            "timestamp": now,
            "level": "ERROR" if i < errors else "INFO",
            "service": service,
            "message": message,
            "response_time_ms": 20.0,
        }
        for i in range(n)
    ]
    return orjson.dumps(recs)


def test_error_rate_breach_reaches_webhook_fast_and_survives_restart(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[[Settings], Any], receiver: Receiver
) -> None:
    yaml = f"""
notifiers:
  - name: hook
    type: webhook
    settings: {{url: "{receiver.url}"}}
"""
    settings = settings_factory(yaml)
    srv = live_server_factory(settings)
    with srv.client() as c:
        c.post("/api/v1/logs", content=logs_now("api", 30, 0), headers={"content-type": "application/json"})
        r = c.post("/api/v1/logs", content=logs_now("api", 30, 10), headers={"content-type": "application/json"})
        sent = time.monotonic()
        assert r.status_code == 200
        got, _body = receiver.wait_for(lambda b: _alert_of(b).get("rule") == "error_rate")
        assert got - sent < 1.0, f"alert latency {got - sent:.3f} s"
        alerts = c.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
        assert [(a["rule"], a["service"], a["severity"]) for a in alerts] == [("error_rate", "api", "critical")]
        assert alerts[0]["value"] == pytest.approx(10 / 60, abs=1e-4)
        rules = {r["name"]: r for r in c.get("/api/v1/rules").json()["rules"]}
        assert rules["error_rate"]["threshold"] == 0.1 and rules["error_rate"]["last_evaluated_at"]
        assert rules["volume"]["last_duration_ms"] is not None
        deadline = time.monotonic() + 60
        while rules["new_pattern"]["mining"]["processed"] < 60 and time.monotonic() < deadline:
            time.sleep(0.05)  # mined off the hot path, asynchronously
            rules = {r["name"]: r for r in c.get("/api/v1/rules").json()["rules"]}
        assert rules["new_pattern"]["mining"]["processed"] == 60 and rules["new_pattern"]["mining"]["dropped"] == 0
        # silences CRUD
        created = c.post(
            "/api/v1/silences",
            json={"matchers": {"service": "web"}, "duration_seconds": 60, "comment": "deploy", "created_by": "me"},
        )
        assert created.status_code == 201
        sid = created.json()["id"]
        assert [s["id"] for s in c.get("/api/v1/silences").json()["silences"]] == [sid]
        assert c.post("/api/v1/silences", json={"matchers": {"service": "web"}}).status_code == 422
        assert (
            c.post(
                "/api/v1/silences", json={"matchers": {"service": "web"}, "expires_at": "2001-01-01T00:00:00Z"}
            ).status_code
            == 422
        )
        assert c.delete(f"/api/v1/silences/{sid}").status_code == 200
        assert c.delete(f"/api/v1/silences/{sid}").status_code == 404
        assert c.get("/api/v1/anomalies").json() == {"anomalies": [], "next_offset": None}
    n_before = len(receiver.bodies)
    srv.stop()

    srv2 = live_server_factory(settings)
    with srv2.client() as c:
        alerts = c.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
        assert [(a["rule"], a["service"]) for a in alerts] == [("error_rate", "api")]
        time.sleep(1.5)  # a few evaluation ticks: the restored alert must not be notified again
        firing = [b for _, b in receiver.bodies[n_before:] if _alert_of(b).get("state") == "firing"]
        assert firing == []


def table(rows: list[tuple[float, str, str, str]], arrival: float, first_id: int = 1) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "id": pa.array(range(first_id, first_id + n), pa.int64()),
            "ts": pa.array([int(r[0] * 1e6) for r in rows], pa.int64()).cast(pa.timestamp("us")),
            "received_at": pa.array([int(arrival * 1e6)] * n, pa.int64()).cast(pa.timestamp("us")),
            "level": pa.array([r[1] for r in rows], pa.string()),
            "service": pa.array([r[2] for r in rows], pa.string()),
            "message": pa.array([r[3] for r in rows], pa.string()),
            "user_id": pa.nulls(n, pa.string()),
            "ip_address": pa.nulls(n, pa.string()),
            "response_time_ms": pa.array([10.0] * n, pa.float64()),
            "trace_id": pa.nulls(n, pa.string()),
            "metadata": pa.nulls(n, pa.string()),
            "late": pa.array([False] * n),
            "source": pa.array(["test"] * n),
        }
    )


def event(rows: list[tuple[float, str, str, str]], arrival: float, first_id: int = 1) -> CommitEvent:
    t = table(rows, arrival, first_id)
    return CommitEvent(t, metrics.aggregate(t.drop_columns(["id"])), 0, int(arrival * 1e6))


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Calls:
    """A NotificationSink recording (rule, service, kind)."""

    def __init__(self, calls: list[tuple[str, str, str]]) -> None:
        self.calls = calls

    def submit(self, alert: Alert, kind: str, duration: float | None = None) -> None:
        self.calls.append((alert.rule, alert.service, kind))


def make_evaluator(
    settings: Settings, clock: Clock, calls: list[tuple[str, str, str]], repo: AlertRepository | None = None
) -> Evaluator:
    writer = AlertWriter(repo) if repo is not None else None
    eng = AlertEngine(settings.alerts, clock=clock, persistence=writer, sink=Calls(calls))
    return Evaluator(
        settings,
        eng,
        clock=clock,
        validator=AnomalyValidator(REPO / "schemas" / "anomaly_schema.yaml"),
        persistence=writer,
    )


def process(ev: Evaluator, e: CommitEvent) -> None:
    """Fold a batch and evaluate the services it touched, as the scheduler does."""
    touched = ev.fold(e.logs, e.partials)
    if touched:
        ev.evaluate(touched)


def test_absence_fires_once_per_outage_and_resolves_when_logs_return(
    settings_factory: Callable[..., Settings],
) -> None:
    clock, calls = Clock(), []
    ev = make_evaluator(settings_factory(), clock, calls)
    process(ev, event([(T0, "INFO", "api", "hello")], T0))
    for step in range(1, 200):  # 1-s timer, injectable clock
        clock.t = T0 + step
        ev.tick()
    assert calls == [("absence", "api", "firing")]  # fired at T0+121, once
    assert ev.engine.get("absence", "api").fired_at.timestamp() == T0 + 121
    clock.t = T0 + 300
    process(ev, event([(T0 + 300, "INFO", "api", "hello")], T0 + 300))
    assert calls[-1] == ("absence", "api", "resolved")
    ev.tick()
    assert len(calls) == 2


def test_thread_hands_commits_from_a_real_store_to_the_engine(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    calls: list[tuple[str, str, str]] = []
    with Store(tmp_path / "x.duckdb") as store:
        repo = AlertRepository(store.cursor)
        ev = make_evaluator(settings, time.time, calls, repo)  # type: ignore[arg-type]
        sched = Scheduler(ev, restore_from=store)
        store.listeners.append(sched.on_commit)
        sched.start()
        now = time.time()
        t = table([(now, "ERROR", "api", "boom")] * 150, now).drop_columns(["id"])
        store.submit(t, [], int(now * 1e6)).result()
        deadline = time.monotonic() + 60
        while ("volume", "api", "firing") not in calls and time.monotonic() < deadline:
            time.sleep(0.01)
        sched.stop()
        assert ("volume", "api", "firing") in calls and ("error_rate", "api", "firing") in calls
        assert isinstance(ev.persistence, AlertWriter)
        ev.persistence.flush()
        assert {(a.rule, a.state) for a in repo.load_active() for a in [a[0]]} >= {("volume", "firing")}
        repo.close()


def test_new_error_pattern_anomaly_is_valid_and_persisted(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    rule = settings.alerts.rules.new_pattern.model_copy(update={"warmup_seconds": 60, "resolve_after_seconds": 30})
    settings = settings.model_copy(
        update={
            "alerts": settings.alerts.model_copy(
                update={"rules": settings.alerts.rules.model_copy(update={"new_pattern": rule})}
            )
        }
    )
    clock, calls = Clock(), []
    with Store(tmp_path / "p.duckdb") as store:
        repo = AlertRepository(store.cursor)
        ev = make_evaluator(settings, clock, calls, repo)
        state = tmp_path / "templates.json"
        pw = PatternWorker(settings.alerts, lambda f: None, state_path=state, clock=clock)
        # during warm-up every template is learned silently
        assert pw.process(table([(T0, "ERROR", "api", "timeout calling db after 30 ms")], T0)) == []
        clock.t = T0 + 120
        found = pw.process(
            table(
                [
                    (clock.t, "INFO", "api", "user 7 logged in"),
                    (clock.t, "ERROR", "api", "timeout calling db after 31 ms"),
                    (clock.t, "ERROR", "api", "disk /var/lib/x full on node 12"),
                ],
                clock.t,
                first_id=10,
            )
        )
        assert [(f.kind, f.template) for f in found] == [("new_pattern", "disk <PATH> full on node <NUM>")]
        ev.handle_pattern(found[0])
        assert calls == [("new_pattern", "api", "firing")]
        assert isinstance(ev.persistence, AlertWriter)
        ev.persistence.flush()
        doc = repo.list_anomalies(5).items[0]
        assert doc["type"] == "new_pattern" and doc["related_log_ids"] == [12]
        assert doc["details"]["example"] == "disk /var/lib/x full on node 12"
        assert "disk <PATH> full on node <NUM>" in doc["description"]
        clock.t += 30
        ev.tick()
        assert calls[-1] == ("new_pattern", "api", "resolved")
        pw.save()
        ids = {tid for tid, _, _ in pw.miner.templates()}
        pw2 = PatternWorker(settings.alerts, lambda f: None, state_path=state, clock=clock)
        assert {tid for tid, _, _ in pw2.miner.templates()} == ids  # stable across restarts
        assert pw2.born == pw.born
        repo.close()


def test_pattern_queue_is_bounded_and_counts_drops(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    pw = PatternWorker(settings.alerts, lambda f: None, max_queue_logs=5)
    t = table([(T0, "INFO", "api", "hello")] * 4, T0)
    assert pw.submit(t) is True
    assert pw.submit(t) is False and pw.dropped == 4
    pw.start()
    pw.stop()
    assert pw.processed == 4 and pw.lines_per_second > 0


def test_anomaly_documents_are_validated(settings_factory: Callable[..., Settings]) -> None:
    v = AnomalyValidator(REPO / "schemas" / "anomaly_schema.yaml")
    clock, calls = Clock(), []
    ev = make_evaluator(settings_factory(), clock, calls)
    with pytest.raises(ValueError, match="schema"):
        ev.write_anomaly({"id": "nope"})
    good = {
        "id": "a" * 32,
        "detected_at": "2026-01-01T00:00:00.000Z",
        "type": "x-custom",
        "severity": "info",
        "service": "s",
        "description": "d",
        "score": 1.0,
        "confidence": 0.5,
        "observed": None,
        "expected": None,
        "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:01:00Z"},
        "related_log_ids": [],
    }
    v.check(good)
    with pytest.raises(ValueError):
        v.check({**good, "type": "Bad Type"})
    with pytest.raises(ValueError):
        v.check({**good, "confidence": 1.5})


def test_template_rate_jump_becomes_a_pattern_rate_anomaly(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    clock, calls = Clock(), []
    ev = make_evaluator(settings, clock, calls)
    pw = PatternWorker(settings.alerts, ev.handle_pattern, clock=clock)
    pw.rates.grace = 0
    for m in range(11):  # 2 per minute for 11 minutes
        t = T0 + 60 * m
        clock.t = t + 30
        pw.process(table([(t, "INFO", "api", f"cache miss for key {m}")] * 2, t, first_id=1 + 2 * m))
        pw.close_minutes(clock.t)
    t = T0 + 660
    clock.t = t + 30
    pw.process(table([(t + i / 10, "INFO", "api", f"cache miss for key {i}") for i in range(200)], t, 100))
    clock.t = t + 61
    [jump] = pw.close_minutes(clock.t)
    assert jump.kind == "pattern_rate" and jump.observed == 200 and jump.expected == pytest.approx(2)
    doc = ev.anomalies[0]
    assert doc["type"] == "pattern_rate" and doc["expected"]["median"] == 2
    assert "usually 2.0/min" in doc["description"]
    assert calls == [("new_pattern", "api", "firing")]


def test_corrupt_miner_state_starts_fresh_and_worker_thread_saves(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    state = tmp_path / "t.json"
    state.write_text("{not json")
    pw = PatternWorker(settings.alerts, lambda f: None, state_path=state, save_interval_s=0)
    assert len(pw.miner) == 0
    pw.start()
    pw.submit(table([(T0, "INFO", "api", "hello world 1")], T0))
    pw.stop()
    assert state.exists() and len(PatternWorker(settings.alerts, lambda f: None, state_path=state).miner) == 1


def test_state_of_an_earlier_masking_is_relearnt_with_a_warm_up(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """After an upgrade that changed masking, the saved templates would not match the new tokens:
    every known event would look new. The worker starts fresh and in its warm-up instead."""
    settings = settings_factory()
    state = tmp_path / "t.json"
    old = PatternWorker(settings.alerts, lambda f: None, state_path=state, clock=lambda: 1_000.0, save_interval_s=0)
    old.start()
    old.submit(table([(T0, "ERROR", "api", "lookup db.example.com failed")], T0))
    old.stop()
    # as loglens wrote it before host names and second renderings were masked (state version 2)
    state.write_text(json.dumps({**json.loads(state.read_text()), "version": 2}))
    found: list[Any] = []
    later = 1_000.0 + 10 * settings.alerts.rules.new_pattern.warmup_seconds
    pw = PatternWorker(settings.alerts, found.append, state_path=state, clock=lambda: later)
    assert len(pw.miner) == 0 and pw.born == later  # relearning, in its warm-up
    pw.process(table([(T0, "ERROR", "api", "lookup db.example.com failed")], T0))
    assert found == []


def test_falling_behind_folds_batches_and_reconfigure(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory("""
alerts:
  overrides:
    big: {volume: {threshold: 10, window_seconds: 120}}
""")
    clock, calls = Clock(), []
    ev = make_evaluator(settings, clock, calls)
    assert ev.windows.horizon_s == 125
    sched = Scheduler(ev)
    ev.patterns = PatternWorker(settings.alerts, sched.on_pattern)
    sched.handle(
        [
            event([(T0, "INFO", "big", "a")] * 6, T0),
            event([(T0, "INFO", "big", "b")] * 6, T0, first_id=7),
            CommitEvent(pa.table({}), metrics.Partials.empty(), 1, 0),
        ]
    )
    assert ("volume", "big", "firing") in calls
    stricter = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"overrides": {}})})
    assert sched.reconfigure(stricter) is True
    clock.t += 1
    ev.tick()
    assert calls[-1] == ("volume", "big", "resolved")  # 12 logs is fine under the global threshold of 100


def test_invalid_anomaly_schema_is_a_config_error(tmp_path: Path) -> None:
    from loglens.errors import ConfigError

    bad = tmp_path / "a.yaml"
    bad.write_text("type: 12\n")
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        AnomalyValidator(bad)
