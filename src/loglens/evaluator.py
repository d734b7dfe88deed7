"""Wiring of detection into the running server: commit listener → evaluator thread → alerts.

The store's writer thread calls `Evaluator.on_commit` after every commit; that only puts the
event on a queue (no work in the writer). The evaluator thread folds each batch into the
sliding windows and baselines, evaluates the rules for the services in the batch at once (so a
breach is seen milliseconds after its commit), and every `evaluation_interval_seconds` runs
all rules for all services (absence, windows sliding past a burst, anomaly minutes closing).
Transitions go to the notifier service (a `NotificationSink`, wired in `loglens.runtime`) and
the live stream (the hub's `publish`); alerts, anomalies and silences are persisted through `AlertDB`.

Template mining runs on its own thread behind a bounded queue (`PatternWorker`): when it falls
behind, batches are dropped and counted — ingest never waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loglens.alerting import AlertEngine, to_dt
from loglens.config import AlertsConfig, AnomalyRule, Settings
from loglens.detect import rules as rules_mod
from loglens.detect.anomaly import AnomalyDetector, Observation, RateJump, TemplateRates
from loglens.detect.documents import PatternFinding, clip, finding_doc, pattern_doc
from loglens.detect.rules import Candidate, RuleWindow
from loglens.detect.windows import SlidingWindows
from loglens.errors import ConfigError, ConfigIssue
from loglens.models import LEVELS
from loglens.schema import load_schema_document
from loglens.store import CommitEvent, Store

log = logging.getLogger("loglens.evaluator")

THRESHOLD_RULES = ("error_rate", "volume", "absence")
_TICK = object()


@dataclass(frozen=True, slots=True)
class _Reconfigure:
    """A config reload handed to the evaluator thread, applied between two evaluations."""

    settings: Settings
    done: threading.Event


# ---- anomaly documents -------------------------------------------------------------------------
class AnomalyValidator:
    """schemas/anomaly_schema.yaml compiled once; `check(doc)` raises ValueError when invalid."""

    def __init__(self, path: str | Path) -> None:
        document = load_schema_document(path)
        # fastjsonschema implements draft-07 semantics, which cover every keyword the schema uses
        compiled = {k: v for k, v in document.items() if k != "$schema"}
        try:
            self._check = fastjsonschema.compile(compiled)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise ConfigError([ConfigIssue(str(path), None, "", f"invalid JSON Schema: {exc}")]) from None

    def check(self, doc: dict[str, Any]) -> None:
        """Raise ValueError naming the offending field when `doc` does not match the schema."""
        try:
            self._check(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise ValueError(f"anomaly does not match schema: {exc.message}") from None


# ---- template mining off the hot path -----------------------------------------------------------
_MINE_CACHE_ENTRIES = 100_000
_MINE_REST_FACTOR = 2.0


class PatternWorker:
    """Mines templates from committed logs on its own thread, behind a bounded queue.

    `submit` never blocks: when more than `max_queue_logs` logs wait, the batch is dropped and
    counted in `dropped`. Miner state is saved next to the store so template ids survive restarts.
    """

    def __init__(
        self,
        alerts: AlertsConfig,
        on_finding: Callable[[PatternFinding], None],
        *,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_queue_logs: int = 200_000,
        save_interval_s: float = 30.0,
    ) -> None:
        from loglens.detect.patterns import TemplateMiner

        self.rule = alerts.rules.new_pattern
        self.on_finding = on_finding
        self.state_path = state_path
        self.clock = clock
        self.max_queue_logs = max_queue_logs
        self.save_interval_s = save_interval_s
        self.miner = TemplateMiner()
        self.born = clock()
        if state_path is not None and state_path.exists():
            try:
                self.miner = TemplateMiner.load(state_path)
                meta = orjson.loads(self._meta_path.read_bytes()) if self._meta_path.exists() else {}
                self.born = float(meta.get("born", self.born))
            except (ValueError, OSError) as exc:  # a corrupt state file must not stop the server
                log.warning("cannot load template miner state; starting fresh", extra={"error": str(exc)})
        self.rates = TemplateRates(factor=self.rule.rate_jump_factor)
        self._min_level = LEVELS.index(self.rule.min_level)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._examples: dict[str, tuple[str, str, int | None]] = {}
        self._cache: dict[str, Any] = {}
        self._dirty = False
        self._last_save = time.monotonic()
        self.processed = 0
        self.dropped = 0
        self.busy_seconds = 0.0

    @property
    def _meta_path(self) -> Path:
        assert self.state_path is not None
        return self.state_path.with_name(self.state_path.name + ".meta")

    @property
    def lines_per_second(self) -> float:
        """Mining throughput measured on this worker."""
        return self.processed / self.busy_seconds if self.busy_seconds else 0.0

    def submit(self, logs: pa.Table) -> bool:
        """Queue a committed batch for mining; False (and counted) when the queue is full."""
        n = logs.num_rows
        if not n or not self.rule.enabled:
            return True
        cols = [c for c in ("id", "ts", "level", "service", "message") if c in logs.column_names]
        logs = logs.select(cols)
        with self._lock:
            backlog = self._queued
        if backlog > self.max_queue_logs // 4:
            # Falling behind: keep the rows new_pattern alerts on (level >= min_level) and shed the
            # rest first, so a flood of INFO lines cannot hide a new error.
            keep = pc.is_in(logs["level"], value_set=pa.array(list(LEVELS[self._min_level :])))
            kept = logs.filter(keep)
            self.dropped += n - kept.num_rows
            logs, n = kept, kept.num_rows
            if not n:
                return False
        with self._lock:
            if self._queued + n > self.max_queue_logs:
                self.dropped += n
                return False
            self._queued += n
        self._queue.put(logs)
        return True

    def start(self) -> None:
        """Start the mining thread."""
        self._thread = threading.Thread(target=self._run, name="loglens-patterns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish queued work, stop, and save the miner state."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self.save()

    def save(self) -> None:
        """Persist the miner (atomic) and its birth time."""
        if self.state_path is None:
            return
        try:
            self.miner.save(self.state_path)
            self._meta_path.write_bytes(orjson.dumps({"born": self.born}))
            self._dirty = False
        except OSError as exc:
            log.warning("cannot save template miner state", extra={"error": str(exc)})

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            started = time.perf_counter()
            try:
                self.process(item)
            except Exception:  # the miner must never take the server down
                log.exception("template mining failed")
            finally:
                with self._lock:
                    self._queued -= item.num_rows
            # Mining holds the GIL; resting in proportion to the work keeps it to about a third
            # of one core, so ingest keeps its throughput. A backlog sheds INFO lines first.
            time.sleep(min(1.0, (time.perf_counter() - started) * _MINE_REST_FACTOR))
            if self._dirty and time.monotonic() - self._last_save > self.save_interval_s:
                self._last_save = time.monotonic()
                self.save()

    def process(self, logs: pa.Table) -> list[PatternFinding]:
        """Mine one batch (in the calling thread); returns and reports new-pattern findings."""
        started = time.perf_counter()
        now = self.clock()
        learning = now - self.born < self.rule.warmup_seconds
        messages = logs["message"].to_pylist()
        results = self._mine(messages)
        levels = logs["level"].to_pylist()
        services = logs["service"].to_pylist()
        ids = logs["id"].to_pylist() if "id" in logs.column_names else [None] * len(messages)
        minutes = pc.divide(pc.cast(logs["ts"], pa.int64()), 60_000_000).to_pylist()
        found: list[PatternFinding] = []
        counts: dict[tuple[str, int], int] = {}
        for r, msg, lvl, svc, lid, minute in zip(results, messages, levels, services, ids, minutes, strict=True):
            counts[(r.template_id, minute * 60)] = counts.get((r.template_id, minute * 60), 0) + 1
            if r.is_new:
                self._dirty = True
            if r.template_id not in self._examples:
                self._examples[r.template_id] = (svc, msg, lid)
            if r.is_new and not learning and LEVELS.index(lvl) >= self._min_level:
                found.append(PatternFinding("new_pattern", svc, r.template_id, r.template, msg, lvl, lid, now))
        for (tid, minute), n in counts.items():
            self.rates.add(tid, minute, n)
        self.processed += len(messages)
        self.busy_seconds += time.perf_counter() - started
        for f in found:
            self.on_finding(f)
        return found

    def _mine(self, messages: list[str]) -> list[Any]:
        """Template of each message; identical messages are mined once (Drain maps equal input
        to the same cluster), which removes most of the regex/tokenising work on real traffic."""
        return list(self.miner.add_many(messages))  # the miner caches by message; ids can merge, so none here

    def close_minutes(self, now: float) -> list[PatternFinding]:
        """Report templates whose last closed minute jumped far above their own rate."""
        jumps: list[RateJump] = self.rates.close(now)
        out = []
        templates = {tid: text for tid, text, _ in self.miner.templates()} if jumps else {}
        for j in jumps:
            svc, example, lid = self._examples.get(j.template_id, ("unknown", "", None))
            out.append(
                PatternFinding(
                    "pattern_rate",
                    svc,
                    j.template_id,
                    templates.get(j.template_id, j.template_id),
                    example,
                    "INFO",
                    lid,
                    j.minute_s + 60,
                    float(j.observed),
                    j.expected,
                )
            )
        for f in out:
            self.on_finding(f)
        return out


# ---- the evaluator ---------------------------------------------------------------------------
@dataclass
class RuleStats:
    """Last evaluation of one rule, for GET /api/v1/rules."""

    last_evaluated_at: float | None = None
    last_duration_ms: float | None = None


class Evaluator:
    """Detection state of one server: windows, baselines, pattern worker and the alert engine."""

    def __init__(
        self,
        settings: Settings,
        engine: AlertEngine,
        *,
        clock: Callable[[], float] = time.time,
        validator: AnomalyValidator | None = None,
        publish: Callable[[str, Any], None] | None = None,
        patterns: PatternWorker | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = settings.alerts
        self.engine = engine
        self.clock = clock
        self.validator = validator
        self.publish = publish
        self.patterns = patterns
        horizon = max(self.alerts.rules.error_rate.window_seconds, self.alerts.rules.volume.window_seconds, 60)
        for o in self.alerts.overrides.values():
            for r in (o.error_rate, o.volume):
                if r is not None:
                    horizon = max(horizon, r.window_seconds)
        self.windows = SlidingWindows(horizon_s=horizon + 5)
        self.detector = AnomalyDetector(self._anomaly_rule)
        self.stats: dict[str, RuleStats] = {name: RuleStats() for name in (*THRESHOLD_RULES, "anomaly", "new_pattern")}
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=200)  # also kept when there is no DB
        self._pattern_last: dict[str, float] = {}
        self._recent_ids: dict[str, deque[int]] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.evaluations = 0

    def _anomaly_rule(self, service: str) -> AnomalyRule:
        rule = rules_mod.effective_rule(self.alerts, "anomaly", service)
        assert isinstance(rule, AnomalyRule)
        return rule

    # ---- feeding -----------------------------------------------------------------------------
    def on_commit(self, event: CommitEvent) -> None:
        """Store listener (writer thread): hand the event over, nothing else."""
        self._queue.put(event)

    def on_pattern(self, finding: PatternFinding) -> None:
        """Pattern worker callback (its thread): hand the finding over."""
        self._queue.put(finding)

    def process(self, event: CommitEvent) -> None:
        """Fold a committed batch in and evaluate the rules of the services it touched."""
        services = self.fold(event)
        if services:
            self.evaluate(services, anomalies=True)

    def fold(self, event: CommitEvent) -> list[str]:
        """Add a committed batch to the windows, baselines and miner queue; returns its services."""
        logs = event.logs
        if logs.num_rows == 0 or "service" not in logs.column_names:
            return []
        services = self.windows.add(logs)
        self.detector.add_partials(event.partials)
        self._remember_ids(logs)
        if self.patterns is not None:
            self.patterns.submit(logs)
        return services

    def _remember_ids(self, logs: pa.Table) -> None:
        if "id" not in logs.column_names:
            return
        tail = logs.slice(max(0, logs.num_rows - 2000))
        errors = pc.is_in(tail["level"], pa.array(["ERROR", "FATAL"]))
        for svc, lid, err in zip(tail["service"].to_pylist(), tail["id"].to_pylist(), errors.to_pylist(), strict=True):
            d = self._recent_ids.get(svc)
            if d is None:
                d = self._recent_ids[svc] = deque(maxlen=5)
            if err or len(d) < 5:
                d.append(lid)

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, services: list[str] | None = None, *, anomalies: bool = True) -> None:
        """Run the threshold rules (and anomaly detection) for `services` (None: all known)."""
        now = self.clock()
        targets = self.windows.services if services is None else services
        candidates: list[Candidate] = []
        for name in THRESHOLD_RULES:
            started = time.perf_counter()
            for svc in targets:
                rule = rules_mod.effective_rule(self.alerts, name, svc)
                window_s = getattr(rule, "window_seconds", 0)
                counts = self.windows.counts(svc, now, window_s) if window_s else None
                w = RuleWindow(
                    svc,
                    now,
                    counts.total if counts else 0,
                    counts.errors if counts else 0,
                    self.windows.last_seen.get(svc),
                )
                candidates.extend(rules_mod.evaluate(rule, w))  # type: ignore[arg-type]
            self._record(name, now, started)
        if anomalies:
            started = time.perf_counter()
            candidates.extend(self._anomalies(targets, now))
            self._record("anomaly", now, started)
        self.engine.observe(candidates)
        self.evaluations += 1

    # ---- reload ------------------------------------------------------------------------------
    def reconfigure(self, settings: Settings, timeout: float = 5.0) -> bool:
        """Switch to new thresholds and rules (config reload) and wait until applied.

        The switch happens in the evaluator thread between two evaluations, so no evaluation mixes
        old and new rules; windows, baselines and firing alerts are kept.
        """
        if self._thread is None:
            self._apply_settings(settings)
            return True
        done = threading.Event()
        self._queue.put(_Reconfigure(settings, done))
        return done.wait(timeout)

    def _apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.alerts = settings.alerts
        # keep the engine's own group wait (0 when the notifier service groups per channel)
        self.engine.config = settings.alerts.model_copy(
            update={"group_wait_seconds": self.engine.config.group_wait_seconds}
        )
        rules = settings.alerts.rules
        widest = [rules.error_rate.window_seconds, rules.volume.window_seconds]
        widest += [r.window_seconds for o in settings.alerts.overrides.values() for r in (o.error_rate, o.volume) if r]
        self.windows.horizon_s = max(self.windows.horizon_s, max(widest) + 5)
        if self.patterns is not None:
            self.patterns.rule = rules.new_pattern
            self.patterns._min_level = LEVELS.index(rules.new_pattern.min_level)
            self.patterns.rates.factor = rules.new_pattern.rate_jump_factor

    def _record(self, name: str, now: float, started: float) -> None:
        st = self.stats[name]
        st.last_evaluated_at = now
        st.last_duration_ms = round((time.perf_counter() - started) * 1000, 3)

    def _anomalies(self, services: list[str], now: float) -> list[Candidate]:
        out = []
        for svc in services:
            rule = self._anomaly_rule(svc)
            if not rule.enabled:
                continue
            counts = self.windows.counts(svc, now, rule.window_seconds)
            p95, n = self.windows.quantile(svc, now, rule.window_seconds, 0.95)
            started, _ended = self.detector.evaluate(svc, now, Observation(counts.total, counts.errors, p95, n))
            for f in started:
                related = list(self._recent_ids.get(svc, ()))
                self.write_anomaly(finding_doc(f, rule.severity, related, now, rule.window_seconds))
            active = [f for (s, _m), f in self.detector.active.items() if s == svc]
            if active:
                top = max(active, key=lambda f: abs(f.score))
                out.append(
                    Candidate(
                        "anomaly",
                        svc,
                        True,
                        round(top.observed, 6),
                        round(top.high, 6),
                        rule.severity,
                        top.description,
                        labels={"metric": top.metric},
                    )
                )
            else:
                out.append(Candidate("anomaly", svc, False, None, None, rule.severity, ""))
        return out

    def handle_pattern(self, p: PatternFinding) -> None:
        """Write a pattern anomaly and fire the service's new_pattern alert."""
        rule = self.alerts.rules.new_pattern
        self.write_anomaly(pattern_doc(p, rule.severity, rule.rate_jump_factor))
        self._pattern_last[p.service] = self.clock()
        summary = (
            f"{p.service}: new {p.level} log pattern '{clip(p.template, 120)}'"
            if p.kind == "new_pattern"
            else f"{p.service}: pattern '{clip(p.template, 120)}' {p.observed:.0f}/min (usually {p.expected}/min)"
        )
        self.stats["new_pattern"].last_evaluated_at = self.clock()
        self.engine.observe(
            [
                Candidate(
                    "new_pattern",
                    p.service,
                    True,
                    p.observed,
                    p.expected,
                    rule.severity,
                    summary,
                    labels={"template_id": p.template_id, "kind": p.kind},
                )
            ]
        )

    def write_anomaly(self, doc: dict[str, Any]) -> None:
        """Validate, persist and publish one anomaly document."""
        if self.validator is not None:
            self.validator.check(doc)
        self.anomalies.appendleft(doc)
        if self.engine.db is not None:
            self.engine.db.save_anomaly(doc, to_dt(self.clock()))
        if self.publish is not None:
            self.publish("anomaly", doc)

    def tick(self) -> None:
        """Timer work: slide windows, close minutes, evaluate everything, expire silences."""
        now = self.clock()
        self.windows.prune(now)
        self.detector.close_minutes(now)
        if self.patterns is not None:
            self.patterns.close_minutes(now)
        self.evaluate(None)
        rule = self.alerts.rules.new_pattern
        expired = [s for s, t in self._pattern_last.items() if now - t >= rule.resolve_after_seconds]
        if expired:
            self.engine.observe([Candidate("new_pattern", s, False, None, None, rule.severity, "") for s in expired])
            # keep reporting "clear" until the alert has resolved: with alerts.resolve_after_seconds
            # (flap damping) one clear observation is not enough, and the alert would fire forever
            still = {a.service for a in self.engine.active() if a.rule == "new_pattern"}
            for s in expired:
                if s not in still:
                    del self._pattern_last[s]
        self.engine.tick()

    # ---- restore -----------------------------------------------------------------------------
    def restore(self, store: Store) -> None:
        """Rebuild windows, last-seen times and baselines from the store after a (re)start."""
        now = self.clock()
        firing_absence = {a.service for a in self.engine.active() if a.rule == "absence"}
        for svc, last_seen_us in store.query("SELECT service, epoch_us(last_seen) FROM services"):
            # a restart is not an outage of every service: judge silence from our own start,
            # except for services already known to be silent
            seen = last_seen_us / 1e6
            self.windows.touch(svc, seen if svc in firing_absence else max(seen, now))
        since = int((now - self.windows.horizon_s) * 1e6)
        logs = store.query_arrow(
            "SELECT service, ts, received_at, level, response_time_ms FROM logs WHERE received_at >= make_timestamp(?)",
            [since],
        )
        if logs.num_rows:
            self.windows.add(logs)
        since_min = int((now - 3600) * 1e6)
        for svc, minute_us, count, errors in store.query(
            "SELECT service, epoch_us(minute), count, error + fatal FROM metrics_minute "
            "WHERE minute >= make_timestamp(?) ORDER BY minute",
            [since_min],
        ):
            self.detector.add_minute(svc, minute_us // 1_000_000, count, errors)
        for svc, minute_us, buckets, counts in store.query(
            "SELECT service, epoch_us(minute), list(bucket), list(count) FROM latency_sketch "
            "WHERE minute >= make_timestamp(?) GROUP BY service, minute",
            [since_min],
        ):
            self.detector.add_minute(svc, minute_us // 1_000_000, 0, 0, dict(zip(buckets, counts, strict=True)))
        self.detector.close_minutes(now)

    # ---- thread ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the evaluator thread (and the pattern worker)."""
        if self.patterns is not None:
            self.patterns.start()
        self._thread = threading.Thread(target=self._run, name="loglens-evaluator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the threads; queued work is finished first."""
        if self._thread is not None:
            self._stop.set()
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self.patterns is not None:
            self.patterns.stop()
        self.engine.flush()

    def _run(self) -> None:
        next_tick = time.monotonic() + self.alerts.evaluation_interval_seconds
        while not self._stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _TICK
            items = [item]
            with contextlib.suppress(queue.Empty):
                while len(items) < 1000:
                    items.append(self._queue.get_nowait())
            try:
                self._handle(items)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.alerts.evaluation_interval_seconds
                    self.tick()
            except Exception:  # evaluation must survive any single bad batch
                log.exception("alert evaluation failed")

    def _handle(self, items: list[Any]) -> None:
        for i in items:
            if isinstance(i, _Reconfigure):
                self._apply_settings(i.settings)
                i.done.set()
        events = [i for i in items if isinstance(i, CommitEvent)]
        if len(events) == 1:
            self.process(events[0])
        elif events:  # fell behind: fold all batches in, then evaluate once
            touched: set[str] = set()
            for ev in events:
                touched.update(self.fold(ev))
            self.evaluate(sorted(touched))
        for i in items:
            if isinstance(i, PatternFinding):
                self.handle_pattern(i)
