"""Event-time replay: the live `Evaluator` and `AlertEngine` driven second by second over history.

`loglens backtest` (raw archived logs) and `loglens analyze` (merged per-second counts and
per-minute aggregates from Dask/Ray workers) both call `replay()`, so they share the rule list,
the candidate builders, the alert lifecycle (for_seconds, flap damping, inhibition) and the
timing: each second `s` of the data is folded in, then the clock stands at the end of that
second (`s + 1 - 1 µs`) and the 1-s timer runs. Arrival time is event time; ids are derived
from (rule, service, start), so every run and every engine gives byte-identical reports.

Seconds where no rule can change its mind are skipped (`alerting/quiet.py`: a conservative,
vectorised mask over the per-second counts), so the cost follows what happens in the data, not
its length; the results are those of ticking every second (tests/test_replay_quiet.py). A
replay with an `on_second` hook (the backtest's latency and pattern feed) ticks every second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.alerting.engine import AlertEngine, Transition
from loglens.alerting.evaluator import Evaluator
from loglens.alerting.quiet import QuietSeconds
from loglens.config import Settings
from loglens.detect.rules import Candidate
from loglens.detect.validator import AnomalyValidator
from loglens.models import AlertRow, iso

SECONDS_SCHEMA = pa.schema(
    [("service", pa.string()), ("second", pa.timestamp("us")), ("count", pa.int64()), ("errors", pa.int64())]
)
_EPS = 1e-6


class ReplayClock:
    """The replay's clock: set by the driver, read by everything else."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def stable_id(*parts: object) -> str:
    """A 32-hex id derived from `parts` (same input, same id, on any engine)."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _alert_id(c: Candidate, now: float) -> str:
    return stable_id(c.rule, c.service, round(now, 6))


@dataclass
class ReplayResult:
    """Transitions and anomaly documents of a replay."""

    start: float | None = None
    end: float | None = None
    transitions: list[Transition] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self) -> list[dict[str, Any]]:
        """One document per alert that fired (API shape): its values when it fired, then when and
        whether it resolved. Ordered by start, rule, service."""
        rows: dict[str, dict[str, Any]] = {}
        for t in self.transitions:
            a = t.alert
            if t.kind == "firing" and a.id not in rows:
                rows[a.id] = a.to_json()
            elif t.kind == "resolved" and a.id in rows:
                rows[a.id].update(state="resolved", resolved_at=iso(a.resolved_at))
        return sorted(rows.values(), key=lambda d: (d["started_at"], d["rule"], d["service"]))

    def durations(self) -> dict[str, float | None]:
        """Seconds each alert fired, by id (None: still firing at the end)."""
        out: dict[str, float | None] = {}
        for t in self.transitions:
            if t.kind == "firing":
                out.setdefault(t.alert.id, None)
            elif t.kind == "resolved":
                out[t.alert.id] = t.duration_seconds
        return out


class _Collect:
    """An `AlertPersistence` that keeps every anomaly document in memory (latest version by id)."""

    def __init__(self) -> None:
        self.anomalies: dict[str, dict[str, Any]] = {}

    def save_alerts(self, rows: Sequence[AlertRow]) -> None:
        """Alert rows are read from the engine's history instead."""

    def save_anomaly(self, doc: dict[str, Any], detected_at: float) -> None:
        """Keep the document (a merged episode replaces its earlier version)."""
        self.anomalies[doc["id"]] = doc


def per_second(logs: pa.Table) -> pa.Table:
    """Logs and errors per (service, second) of event time, in `SECONDS_SCHEMA`."""
    if logs.num_rows == 0:
        return SECONDS_SCHEMA.empty_table()
    errors = pc.cast(pc.is_in(logs["level"], pa.array(["ERROR", "FATAL"])), pa.int64())
    t = pa.table({"service": logs["service"], "second": pc.floor_temporal(logs["ts"], unit="second"), "e": errors})
    g = t.group_by(["service", "second"], use_threads=False).aggregate([("e", "count"), ("e", "sum")])
    return pa.table(
        {"service": g["service"], "second": g["second"], "count": g["e_count"], "errors": g["e_sum"]},
        schema=SECONDS_SCHEMA,
    )


class _Feed:
    """Hands per-second counts to the windows up to a second, lazily: seconds skipped as quiet are
    added only when a tick needs them, and only those the windows' horizon still holds."""

    def __init__(
        self,
        ev: Evaluator,
        clock: ReplayClock,
        services: list[str],
        secs: np.ndarray,
        counts: np.ndarray,
        errors: np.ndarray,
        bounds: np.ndarray,
        start: int,
    ) -> None:
        self.ev, self.clock = ev, clock
        self.services, self.secs, self.counts, self.errors = services, secs, counts, errors
        self.bounds, self.start = bounds, start
        self.row = 0  # rows before this one are in the windows

    def through(self, second: int) -> None:
        """Add every row up to and including `second` (as if each had been added at its own second)."""
        end = int(self.bounds[second - self.start + 1])
        if end <= self.row:
            return
        # rows at or below the horizon's floor would be pruned by this second's tick: their
        # services were seen, nothing more
        floor = int(np.searchsorted(self.secs, second - self.ev.windows.horizon_s, side="right"))
        windows = self.ev.windows
        if floor > self.row:
            last: dict[str, int] = {}
            for j in range(self.row, min(floor, end)):
                last[self.services[j]] = j
            for svc, j in last.items():
                windows.touch(svc, int(self.secs[j]) + 1 - _EPS)
            self.row = min(floor, end)
        for j in range(self.row, end):
            s = int(self.secs[j])
            windows.add_counts(self.services[j], s, int(self.counts[j]), int(self.errors[j]), s + 1 - _EPS)
        self.row = end

    def refresh(self, second: int) -> None:
        """The effect of a quiet tick at `second`: the threshold rules judged as the tick judges them,
        so firing alerts carry that second's values. Nothing else of a quiet tick leaves a trace."""
        self.through(second)
        self.clock.t = second + 1 - _EPS
        self.ev.windows.prune(self.clock.t)
        self.ev.evaluate(None, anomalies=False)


def replay(
    settings: Settings,
    seconds: pa.Table,
    partials: metrics.Partials,
    *,
    validator: AnomalyValidator | None = None,
    on_second: Callable[[Evaluator, int], None] | None = None,
) -> ReplayResult:
    """Replay per-second counts (`SECONDS_SCHEMA`) and per-minute aggregates through the rules.

    `on_second(evaluator, s)` runs after second `s` is folded in and before it is judged: the
    backtest feeds latency samples and mines templates there.
    """
    result = ReplayResult()
    if seconds.num_rows == 0:
        return result
    secs = (pc.cast(seconds["second"], pa.int64()).to_numpy() // 1_000_000).astype(np.int64)
    order = np.argsort(secs, kind="stable")
    secs = secs[order]
    services = seconds["service"].take(pa.array(order)).to_pylist()
    counts = seconds["count"].take(pa.array(order)).to_numpy()
    errors = seconds["errors"].take(pa.array(order)).to_numpy()
    start, end = int(secs[0]), int(secs[-1])
    result.start, result.end = float(start), float(end + 1)
    clock = ReplayClock(float(start))
    engine = AlertEngine(settings.alerts, clock=clock, id_factory=_alert_id)
    engine.keep_history = True
    collect = _Collect()
    ev = Evaluator(
        settings,
        engine,
        clock=clock,
        validator=validator,
        persistence=collect,
        anomaly_ids=lambda svc, metric, now: stable_id("anomaly", svc, metric, round(now, 6)),
    )
    ev.detector.add_partials(partials)
    bounds = np.searchsorted(secs, np.arange(start, end + 2), side="left")
    feed = _Feed(ev, clock, services, secs, counts, errors, bounds, start)
    # Quiet seconds (`alerting/quiet.py`) are skipped when nothing else (a backtest's latency and
    # patterns) hooks into each second; the results are those of ticking every second.
    quiet = None
    if on_second is None and QuietSeconds.fits(len(set(services)), end - start + 1):
        quiet = QuietSeconds(ev, start, end, services, secs, counts, errors)
    # the replay stops with the data: alerts still firing then are reported as such (running the
    # timer on would only page for the data's end, which is not an outage)
    sec = start
    while sec <= end:
        firing = ev.at_rest() if quiet is not None else None
        if quiet is not None and firing is not None:
            acting = quiet.first_acting(sec, firing)
            if acting > sec:
                # as the last skipped second would have: firing alerts carry its values
                feed.refresh(acting - 1)
                sec = acting
                continue
        feed.through(sec)
        clock.t = sec + 1 - _EPS  # the end of this second
        if on_second is not None:
            on_second(ev, sec)
        ev.tick()  # evaluates every rule that can change at the end of each second
        sec += 1
    result.transitions = [t for t in engine.history if t.kind in ("firing", "resolved")]
    result.anomalies = list(collect.anomalies.values())
    return result
