"""Alerts and anomalies the configured rules would have raised over the analysed period.

A backtest over the merged aggregates with the live server's pure detectors:
- threshold rules (`loglens.detect.rules.evaluate`: error_rate, volume, absence) are judged
  every second on sliding windows built from the per-second counts, exactly like the live
  evaluator; absence is judged on event time (archives have no arrival time);
- anomalies (`loglens.detect.anomaly.AnomalyDetector`) are judged at the end of every minute
  on that minute, against the baseline of the minutes before it.
Consecutive breaching evaluations form one alert episode (pending → firing → resolved, with the
rule's `for_seconds`). Ids are derived from (rule, service, start), so every engine produces
byte-identical reports. Runs on the driver: its input is already small (per-second counts).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from loglens import metrics
from loglens.config import Settings
from loglens.detect import rules as rules_mod
from loglens.detect.anomaly import AnomalyDetector, Observation
from loglens.detect.documents import finding_doc, to_dt
from loglens.detect.rules import Candidate, RuleWindow
from loglens.models import iso

THRESHOLD_RULES = ("error_rate", "volume", "absence")


@dataclass
class Detection:
    """What the detectors found, plus notes on how they were applied."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _stable_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


class _Episodes:
    """Folds a time-ordered stream of candidates for one (rule, service) into alert episodes."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._start: float | None = None
        self._fired: dict[str, Any] | None = None

    def observe(self, c: Candidate, now: float) -> None:
        if c.breach:
            if self._start is None:
                self._start = now
            if self._fired is None and now - self._start >= c.for_seconds:
                self._fired = {
                    "id": _stable_id(c.rule, c.service, self._start),
                    "rule": c.rule,
                    "service": c.service,
                    "severity": c.severity,
                    "state": "firing",
                    "value": c.value,
                    "threshold": c.threshold,
                    "summary": c.summary,
                    "started_at": iso(to_dt(self._start)),
                    "fired_at": iso(to_dt(now)),
                    "resolved_at": None,
                    "labels": dict(c.labels),
                }
            elif self._fired is not None and c.value is not None and (self._fired["value"] or 0) < c.value:
                self._fired.update(value=c.value, summary=c.summary, labels=dict(c.labels))  # keep the peak
        elif self._start is not None:
            if self._fired is not None:
                self._fired.update(state="resolved", resolved_at=iso(to_dt(now)))
                self.alerts.append(self._fired)
            self._start, self._fired = None, None

    def finish(self) -> list[dict[str, Any]]:
        if self._fired is not None:  # still firing when the data ends
            self.alerts.append(self._fired)
        return self.alerts


def _dense(secs: np.ndarray, values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    out = np.zeros(hi - lo + 1, dtype=np.int64)
    out[secs - lo] = values
    return out


def _threshold_alerts(seconds: pa.Table, settings: Settings) -> list[dict[str, Any]]:
    if seconds.num_rows == 0:
        return []
    secs_all = (seconds["second"].cast(pa.int64()).to_numpy() // 1_000_000).astype(np.int64)
    services = np.asarray(seconds["service"].to_pylist(), dtype=object)
    totals_all = seconds["count"].to_numpy()
    errors_all = seconds["errors"].to_numpy()
    lo, hi = int(secs_all.min()), int(secs_all.max())
    out: list[dict[str, Any]] = []
    for svc in sorted(set(services.tolist())):
        sel = services == svc
        secs = secs_all[sel]
        # cumulative sums with a leading 0: the window (now - W, now] is cs[now] - cs[now - W]
        cs_total = np.concatenate([[0], np.cumsum(_dense(secs, totals_all[sel], lo, hi))])
        cs_err = np.concatenate([[0], np.cumsum(_dense(secs, errors_all[sel], lo, hi))])
        seen = np.zeros(hi - lo + 1, dtype=np.int64) - 1
        seen[secs - lo] = secs
        last_seen = np.maximum.accumulate(seen)
        for name in THRESHOLD_RULES:
            rule = rules_mod.effective_rule(settings.alerts, name, svc)
            if not getattr(rule, "enabled", False):
                continue
            window = int(getattr(rule, "window_seconds", 0))
            fold = _Episodes()
            for i in range(hi - lo + 1):
                j = max(0, i + 1 - window) if window else i + 1
                last = int(last_seen[i])
                w = RuleWindow(
                    svc,
                    float(lo + i),
                    int(cs_total[i + 1] - cs_total[j]),
                    int(cs_err[i + 1] - cs_err[j]),
                    float(last) + 1.0 if last >= 0 else None,  # the end of the last second with logs
                )
                for c in rules_mod.evaluate(rule, w):  # type: ignore[arg-type]
                    fold.observe(c, lo + i + 1.0)
            out.extend(fold.finish())
    return out


def _anomalies(partials: metrics.Partials, settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    m = partials.minute
    if m.num_rows == 0:
        return [], []
    rule_for = lambda svc: rules_mod.effective_rule(settings.alerts, "anomaly", svc)  # noqa: E731
    detector = AnomalyDetector(rule_for)
    detector.add_partials(partials)
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    for svc, minute, n, e, f in zip(
        m["service"].to_pylist(),
        (m["minute"].cast(pa.int64()).to_numpy() // 1_000_000).tolist(),
        m["count"].to_pylist(),
        m["error"].to_pylist(),
        m["fatal"].to_pylist(),
        strict=True,
    ):
        counts[(svc, minute)] = (n, e + f)
    sketches: dict[tuple[str, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    s = partials.sketch
    for svc, minute, b, c in zip(
        s["service"].to_pylist(),
        (s["minute"].cast(pa.int64()).to_numpy() // 1_000_000).tolist(),
        s["bucket"].to_pylist(),
        s["count"].to_pylist(),
        strict=True,
    ):
        sketches[(svc, minute)][0].append(b)
        sketches[(svc, minute)][1].append(c)
    services = sorted({k[0] for k in counts})
    first, last = min(k[1] for k in counts), max(k[1] for k in counts)
    docs: list[dict[str, Any]] = []
    folds = {svc: _Episodes() for svc in services}
    for minute in range(first, last + 60, 60):
        now = float(minute + 60)
        detector.close_minutes(now)
        for svc in services:
            rule = rule_for(svc)
            n, e = counts.get((svc, minute), (0, 0))
            buckets, bcounts = sketches.get((svc, minute), ([], []))
            obs = Observation(n, e, metrics.quantile(buckets, bcounts, 0.95), int(sum(bcounts)))
            started, _ended = detector.evaluate(svc, now, obs)
            for finding in started:
                doc = finding_doc(finding, rule.severity, [], now)
                doc["id"] = _stable_id("anomaly", svc, finding.metric, now)
                docs.append(doc)
            active = [f for (sv, _m), f in detector.active.items() if sv == svc]
            if active:
                top = max(active, key=lambda f: abs(f.score))
                c = Candidate(
                    "anomaly",
                    svc,
                    True,
                    round(top.observed, 6),
                    round(top.high, 6),
                    rule.severity,
                    top.description,
                    labels={"metric": top.metric},
                )
            else:
                c = Candidate("anomaly", svc, False, None, None, rule.severity, "")
            folds[svc].observe(c, now)
    alerts = [a for svc in services for a in folds[svc].finish()]
    return docs, alerts


def run_detectors(partials: metrics.Partials, seconds: pa.Table, settings: Settings) -> Detection:
    """Replay the merged aggregates through the configured rules and the anomaly detector."""
    found = Detection()
    found.alerts = _threshold_alerts(seconds, settings)
    anomalies, anomaly_alerts = _anomalies(partials, settings)
    found.anomalies = anomalies
    found.alerts.extend(anomaly_alerts)
    found.alerts.sort(key=lambda a: (a["started_at"], a["rule"], a["service"]))
    found.notes.append(
        "backtest: threshold rules judged every second on event time (absence included); anomalies judged "
        "per minute; new_pattern needs log messages and is not replayed by analyze"
    )
    return found
