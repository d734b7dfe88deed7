"""Detection state of one server or replay: windows, baselines, the series cap and expiry.

`Evaluator` folds committed batches into the sliding windows and anomaly baselines, builds the
rule candidates (with the builders shared by live and replay: `detect.rules.threshold_candidates`
and `detect.anomaly.anomaly_candidate`) and hands them to the `AlertEngine`. It owns no thread
(`loglens.alerting.scheduler` drives it live, `loglens.alerting.replay` in event time) and no
SQL (anomalies go to an `AlertPersistence` port).

Cost follows what changed: window rules are judged for services with logs inside the window
horizon or an alert open, absence only for services already silent longer than the smallest
absence threshold, anomalies for services with recent logs or an open episode. At most
`alerts.max_series` services are tracked; logs of further new names are left out of detection
(they are stored and queryable as always), counted, and a `series_limit` meta-alert fires
once. Services idle for `alerts.series_idle_seconds` are forgotten (their alerts resolve), and
`on_expire` tells the owner of the services registry which ones.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.alerting.engine import AlertEngine
from loglens.alerting.ports import AlertPersistence, Publish
from loglens.config import AbsenceRule, AlertsConfig, AnomalyRule, ErrorRateRule, Settings, VolumeRule
from loglens.detect import rules as rules_mod
from loglens.detect.anomaly import AnomalyDetector, Observation, anomaly_candidate
from loglens.detect.documents import PatternFinding, clip, finding_doc, pattern_doc
from loglens.detect.pattern_worker import PatternWorker
from loglens.detect.rules import THRESHOLD_RULES, Candidate
from loglens.detect.validator import AnomalyValidator
from loglens.detect.windows import SlidingWindows

log = logging.getLogger("loglens.evaluator")

SERIES_META = "series_limit"  # service label of the meta-alert raised when the series cap is hit
EXPIRY_CHECK_SECONDS = 60.0
EPISODE_MERGE_SECONDS = 300.0
STORM_SLICE = 1000  # candidates per engine call in a storm
STORM_PAUSE_SECONDS = 0.002  # an anomaly of the same metric restarting within this is one episode


@dataclass
class RuleStats:
    """Last evaluation of one rule, for GET /api/v1/rules."""

    last_evaluated_at: float | None = None
    last_duration_ms: float | None = None


@dataclass
class SeriesStats:
    """The series cap at work, for /metrics and GET /api/v1/rules."""

    tracked: int = 0
    rejected_logs: int = 0
    rejected_names: int = 0  # distinct names per batch, summed (a name sent in 3 batches counts 3)
    expired: int = 0


def _horizon(alerts: AlertsConfig) -> int:
    widest = [alerts.rules.error_rate.window_seconds, alerts.rules.volume.window_seconds, 60]
    widest += [r.window_seconds for o in alerts.overrides.values() for r in (o.error_rate, o.volume) if r]
    return max(widest) + 5


class Evaluator:
    """Windows, baselines, pattern findings and the alert engine of one server or replay."""

    def __init__(
        self,
        settings: Settings,
        engine: AlertEngine,
        *,
        clock: Callable[[], float] = time.time,
        validator: AnomalyValidator | None = None,
        persistence: AlertPersistence | None = None,
        publish: Publish | None = None,
        patterns: PatternWorker | None = None,
        on_expire: Callable[[list[str]], None] | None = None,
        anomaly_ids: Callable[[str, str, float], str] | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = settings.alerts
        self.engine = engine
        self.clock = clock
        self.validator = validator
        self.persistence = persistence
        self.publish = publish
        self.patterns = patterns
        self.on_expire = on_expire
        self.anomaly_ids = anomaly_ids
        self.windows = SlidingWindows(horizon_s=_horizon(self.alerts))
        self.detector = AnomalyDetector(self._anomaly_rule)
        self.stats: dict[str, RuleStats] = {name: RuleStats() for name in (*THRESHOLD_RULES, "anomaly", "new_pattern")}
        self.series = SeriesStats()
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=200)  # also kept when there is no DB
        self._episodes: dict[tuple[str, str], tuple[dict[str, Any], float | None]] = {}
        self._pattern_last: dict[str, float] = {}
        self._recent_ids: dict[str, deque[int]] = {}
        self._limit_raised = False
        self._next_expiry = 0.0
        self.evaluations = 0

    def _anomaly_rule(self, service: str) -> AnomalyRule:
        rule = rules_mod.effective_rule(self.alerts, "anomaly", service)
        assert isinstance(rule, AnomalyRule)
        return rule

    # ---- feeding -----------------------------------------------------------------------------
    def fold(self, logs: pa.Table, partials: metrics.Partials) -> list[str]:
        """Add a committed batch to the windows, baselines and miner queue; returns its services."""
        if logs.num_rows == 0 or "service" not in logs.column_names:
            return []
        logs, partials = self._within_cap(logs, partials)
        if logs.num_rows == 0:
            return []
        services = self.windows.add(logs)
        self.detector.add_partials(partials)
        self._remember_ids(logs)
        if self.patterns is not None:
            self.patterns.submit(logs)
        return services

    def _within_cap(self, logs: pa.Table, partials: metrics.Partials) -> tuple[pa.Table, metrics.Partials]:
        """Leave out logs of new service names once `max_series` services are tracked."""
        cap = self.alerts.max_series
        names = pc.unique(logs["service"]).to_pylist()
        new = [n for n in names if n not in self.windows]
        room = cap - len(self.windows)
        if len(new) <= room:
            return logs, partials
        rejected = new[max(room, 0) :]
        drop = pa.array(rejected, pa.string())
        keep = pc.invert(pc.is_in(logs["service"], value_set=drop))
        kept = logs.filter(keep)
        self.series.rejected_logs += logs.num_rows - kept.num_rows
        self.series.rejected_names += len(rejected)
        if not self._limit_raised:
            self._limit_raised = True
            log.warning("series limit reached", extra={"max_series": cap, "first_rejected": rejected[0]})
            self.engine.raise_meta(
                SERIES_META,
                f"more than {cap} services: logs of new service names (first: {clip(rejected[0], 80)}) are stored "
                "but left out of alerting (alerts.max_series)",
            )
        minute = partials.minute.filter(pc.invert(pc.is_in(partials.minute["service"], value_set=drop)))
        sketch = partials.sketch.filter(pc.invert(pc.is_in(partials.sketch["service"], value_set=drop)))
        return kept, replace(partials, minute=minute, sketch=sketch)

    def _remember_ids(self, logs: pa.Table) -> None:
        """Keep the ids of each service's latest logs (errors preferred) for anomaly documents.

        Per service, a deque of 5 takes any log while it has room and then errors only; so of
        this batch's rows it ends with the last 5 of (its first `room` rows, then its errors).
        Computed per service with numpy rather than per row.
        """
        if "id" not in logs.column_names or logs.num_rows == 0:
            return
        tail = logs.slice(max(0, logs.num_rows - 2000)).select(["service", "id", "level"]).combine_chunks()
        coded = pc.dictionary_encode(tail["service"]).chunk(0)
        codes = coded.indices.to_numpy(zero_copy_only=False)
        ids = tail["id"].chunk(0).to_numpy(zero_copy_only=False)
        errors = np.asarray(
            pc.is_in(tail["level"], pa.array(["ERROR", "FATAL"])).chunk(0).to_numpy(zero_copy_only=False), dtype=bool
        )
        order = np.argsort(codes, kind="stable")  # each service's rows together, in row order
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for rows in np.split(order, bounds):
            if not len(rows):
                continue
            svc = coded.dictionary[int(codes[rows[0]])].as_py()
            d = self._recent_ids.get(svc)
            if d is None:
                d = self._recent_ids[svc] = deque(maxlen=5)
            room = 5 - len(d)
            kept = rows[:room] if room > 0 else rows[:0]
            later = rows[len(kept) :]
            d.extend(ids[np.concatenate([kept, later[errors[later]]])[-5:]].tolist())

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, services: list[str] | None = None, *, anomalies: bool = True) -> None:
        """Run the threshold rules (and anomaly detection) for `services` (None: every service).

        Only services whose outcome can differ from "quiet, no alert" are judged: one that could
        breach (cheap upper bounds from the windows) or that has an alert open to resolve.
        """
        now = self.clock()
        candidates: list[Candidate] = []
        for name in THRESHOLD_RULES:
            started = time.perf_counter()
            targets = self._due(name, now, services)
            candidates.extend(rules_mod.threshold_candidates(self.alerts, name, self.windows, targets, now))
            self._record(name, now, started)
        if anomalies:
            started = time.perf_counter()
            candidates.extend(self._anomalies(self._anomaly_due(services), now))
            self._record("anomaly", now, started)
        self._observe(candidates)
        self.evaluations += 1

    def _observe(self, candidates: list[Candidate]) -> None:
        """Hand candidates to the engine; a storm in slices with a pause between them, so the event
        loop's thread gets the GIL and a CPU while thousands of alerts change state."""
        for i in range(0, len(candidates), STORM_SLICE):
            if i:
                time.sleep(STORM_PAUSE_SECONDS)
            self.engine.observe(candidates[i : i + STORM_SLICE])

    def _limits(self, name: str) -> list[object]:
        rules = [getattr(self.alerts.rules, name)]
        rules += [getattr(o, name) for o in self.alerts.overrides.values() if getattr(o, name) is not None]
        return [r for r in rules if r.enabled]

    def _due(self, name: str, now: float, services: list[str] | None) -> list[str]:
        """Services whose outcome of threshold rule `name` can differ from a quiet non-breach."""
        open_ = self.engine.open_services(name)
        rules = self._limits(name)
        if not rules:
            return sorted(open_)
        if name == "absence":
            # silent past the smallest threshold and not yet alerting, or alerting and back
            least = min(r.threshold_seconds for r in rules if isinstance(r, AbsenceRule))
            if services is None:
                idle = set(self.windows.idle(now - least))
                return sorted(idle ^ open_)
            seen = self.windows.seen
            idle = {s for s in services if (t := seen(s)) is not None and t < now - least}
            return sorted(idle ^ (open_ & set(services)))
        pool = self.windows.busy if services is None else services
        if name == "error_rate":
            least_events = min(r.min_events for r in rules if isinstance(r, ErrorRateRule))
            held = self.windows.held
            could = {s for s in pool if (h := held(s))[1] > 0 and h[0] >= least_events}
        else:
            least_volume = min(r.threshold for r in rules if isinstance(r, VolumeRule))
            could = {s for s in pool if self.windows.held(s)[0] > least_volume}
        return sorted(could | (open_ if services is None else open_ & set(services)))

    def _anomaly_due(self, services: list[str] | None) -> list[str]:
        pool = self.windows.busy if services is None else services
        open_ = self.engine.open_services("anomaly")
        ready = self.detector.ready if services is None else self.detector.ready & set(pool)
        return sorted(ready | (open_ if services is None else open_ & set(services)) | self.detector.active_services)

    # ---- reload ------------------------------------------------------------------------------
    def apply_settings(self, settings: Settings) -> None:
        """Switch to new thresholds and rules; windows, baselines and firing alerts are kept."""
        self.settings = settings
        self.alerts = settings.alerts
        self.engine.config = settings.alerts
        self.detector.refresh_ready()
        self.windows.horizon_s = max(self.windows.horizon_s, _horizon(settings.alerts))
        if self.patterns is not None:
            self.patterns.reconfigure(settings.alerts.rules.new_pattern)

    def _record(self, name: str, now: float, started: float) -> None:
        st = self.stats[name]
        st.last_evaluated_at = now
        st.last_duration_ms = round((time.perf_counter() - started) * 1000, 3)

    def _anomalies(self, services: Iterable[str], now: float) -> list[Candidate]:
        out = []
        for svc in services:
            rule = self._anomaly_rule(svc)
            if not rule.enabled:
                continue
            counts = self.windows.counts(svc, now, rule.window_seconds)
            p95, n = self.windows.quantile(svc, now, rule.window_seconds, 0.95)
            started, ended = self.detector.evaluate(svc, now, Observation(counts.total, counts.errors, p95, n))
            for metric in ended:
                doc, _ = self._episodes.get((svc, metric), ({}, None))
                if doc:
                    self._episodes[(svc, metric)] = (doc, now)
            for f in started:
                self._start_episode(f, rule, now)
            out.append(anomaly_candidate(self.detector, svc, rule))
        return out

    def _start_episode(self, f: Any, rule: AnomalyRule, now: float) -> None:
        """One anomaly document per episode: a metric that re-enters its band and leaves it again
        within EPISODE_MERGE_SECONDS updates the same document instead of adding a row."""
        key = (f.service, f.metric)
        related = list(self._recent_ids.get(f.service, ()))
        doc = finding_doc(f, rule.severity, related, now, rule.window_seconds)
        prev, ended_at = self._episodes.get(key, ({}, None))
        same_way = bool(prev) and prev["type"] == doc["type"]  # a drop after a spike is a new episode
        if same_way and (ended_at is None or now - ended_at <= EPISODE_MERGE_SECONDS):
            doc["id"] = prev["id"]
            doc["window"] = {**doc["window"], "start": prev["window"]["start"]}
        elif self.anomaly_ids is not None:
            doc["id"] = self.anomaly_ids(f.service, f.metric, now)
        self._episodes[key] = (doc, None)
        self.write_anomaly(doc)

    def adopt_restored(self) -> None:
        """After a restart: restored new_pattern alerts clear like fresh ones (their last finding
        is taken as now), so they resolve instead of firing forever."""
        now = self.clock()
        for svc in self.engine.open_services("new_pattern"):
            self._pattern_last.setdefault(svc, now)

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
        """Validate, persist (queued) and publish one anomaly document."""
        if self.validator is not None:
            self.validator.check(doc)
        if self.anomalies and self.anomalies[0]["id"] == doc["id"]:
            self.anomalies[0] = doc
        else:
            self.anomalies.appendleft(doc)
        if self.persistence is not None:
            self.persistence.save_anomaly(doc, self.clock())
        if self.publish is not None:
            self.publish("anomaly", doc)

    def tick(self) -> None:
        """Timer work: slide windows, close minutes, evaluate what can change, expire idle services."""
        now = self.clock()
        self.windows.prune(now)
        self.detector.close_minutes(now)
        if self.patterns is not None:
            self.patterns.close_minutes(now)
        self.evaluate(None)
        rule = self.alerts.rules.new_pattern
        # new_pattern is an event, not a level: it clears once no finding came for a while, and
        # the engine's tick completes that resolve even with resolve_after_seconds > 0
        expired = [s for s, t in self._pattern_last.items() if now - t >= rule.resolve_after_seconds]
        for s in expired:
            del self._pattern_last[s]
        if expired:
            self.engine.observe([Candidate("new_pattern", s, False, None, None, rule.severity, "") for s in expired])
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRY_CHECK_SECONDS
            self.expire(now)
        self.engine.tick()

    def at_rest(self) -> frozenset[tuple[str, str]] | None:
        """The firing (rule, service) keys when a replay may skip quiet seconds: the engine waits on
        no timer, no anomaly episode is under way and no pattern alert is clearing; else None."""
        if self.detector.active or self._pattern_last or self.patterns is not None or self._limit_raised:
            return None
        return self.engine.steady_keys()

    def expiry_due(self, now: float) -> bool:
        """Whether the tick at `now` checks for idle services (every EXPIRY_CHECK_SECONDS)."""
        return now >= self._next_expiry

    def skip_expiry(self, now: float) -> None:
        """Move the idle check on as the tick at `now` would, when the caller knows it finds no idle service."""
        self._next_expiry = now + EXPIRY_CHECK_SECONDS

    def expire(self, now: float) -> list[str]:
        """Forget services idle longer than `alerts.series_idle_seconds`; their alerts resolve."""
        idle_s = self.alerts.series_idle_seconds
        if idle_s <= 0:
            return []
        gone = self.windows.idle(now - idle_s)
        for svc in gone:
            self.windows.forget(svc)
            self.detector.forget(svc)
            self._recent_ids.pop(svc, None)
            self._pattern_last.pop(svc, None)
            for key in [k for k in self._episodes if k[0] == svc]:
                del self._episodes[key]
            self.engine.resolve_service(svc, f"{svc}: no longer tracked (idle for more than {idle_s:.0f} s)")
        if gone:
            self.series.expired += len(gone)
            log.info("idle services expired from detection", extra={"services": len(gone)})
            if self.on_expire is not None:
                self.on_expire(gone)
        if self._limit_raised and len(self.windows) < 0.9 * self.alerts.max_series:
            self._limit_raised = False
            self.engine.resolve_meta(SERIES_META)
        return gone

    @property
    def tracked(self) -> int:
        """Services tracked by detection now."""
        return len(self.windows)
