"""Robust per-service baselines (median/MAD) and the anomalies that leave them. Pure module.

Baselines are built from *closed* event-time minutes (volume, error rate, p95 latency); the
observation judged is the sliding 60-s window ending now (from `windows.SlidingWindows`), so a
spike is seen within a second rather than at the end of its minute.

Guards against false alarms, each configurable in `alerts.rules.anomaly`:
- warm-up: a metric is judged only after `warmup_minutes` closed minutes of history;
- minimum baseline: a service whose median volume is below `min_baseline_volume` is not judged;
- noise floors: the band is never narrower than sampling noise (Poisson for counts, binomial
  for error rates) or a share of the median (10 % volume, 30 % p95 latency), so steady
  traffic with a tiny MAD stays quiet;
- hysteresis: an anomaly starts above `k` and ends only below `exit_k`.

`TemplateRates` applies the same idea to the per-minute counts of each log template.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.config import AnomalyRule
from loglens.detect.rules import Candidate

METRICS: tuple[str, ...] = ("volume", "error_rate", "p95_latency")
_MAD_TO_SD = 1.4826  # MAD of a normal distribution × this = its standard deviation
_MIN_ERROR_SAMPLES = 10
_MIN_ERRORS = 5  # fewer errors in the window is never an error-rate anomaly (small-count noise)
_MIN_LATENCY_SAMPLES = 30


@dataclass(frozen=True, slots=True)
class Observation:
    """The sliding window judged for one service: logs, errors, p95 latency and its sample size."""

    volume: int
    errors: int
    p95: float | None = None
    p95_samples: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    """A metric of a service outside its band: the start of an anomaly episode."""

    service: str
    metric: str
    observed: float
    median: float
    low: float
    high: float
    score: float
    baseline_minutes: int
    at: float  # epoch s of the observation (end of its 60-s window)

    @property
    def confidence(self) -> float:
        """How sure we are this is not noise, from the score (Chebyshev bound 1 - 1/score²)."""
        return round(min(0.999, max(0.0, 1.0 - 1.0 / (self.score * self.score))), 3) if self.score else 0.0

    @property
    def description(self) -> str:
        """One-line explanation a person can act on."""
        unit = {"volume": " logs/min", "error_rate": "", "p95_latency": " ms"}[self.metric]
        name = {"volume": "volume", "error_rate": "error rate", "p95_latency": "p95 latency"}[self.metric]

        def fmt(v: float) -> str:
            return f"{v:.1%}" if self.metric == "error_rate" else f"{v:.0f}"

        way = "above" if self.observed > self.median else "below"
        return (
            f"{self.service}: {name} {fmt(self.observed)}{unit} is {way} its usual {fmt(self.median)}{unit} "
            f"(expected {fmt(self.low)}–{fmt(self.high)}, score {self.score:.1f} over "
            f"{self.baseline_minutes} min of history)"
        )


@dataclass(slots=True)
class _Minute:
    count: int = 0
    errors: int = 0
    sketch: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Baseline:
    volume: deque[float]
    error_rate: deque[float]
    p95_latency: deque[float]
    last_closed: int | None = None  # start (epoch s) of the newest closed minute
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (median, MAD)

    def median_mad(self, metric: str) -> tuple[float, float]:
        """Median and MAD of a metric's history, cached until the next minute closes."""
        cached = self.stats.get(metric)
        if cached is None:
            cached = self.stats[metric] = _median_mad(getattr(self, metric))
        return cached


def _median(values: list[float]) -> float:
    """`np.median` of a short list, bit for bit (the mean of the two middle values when even),
    without numpy's per-call overhead (baselines hold at most an hour of minutes)."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _median_mad(values: deque[float]) -> tuple[float, float]:
    if not values:  # numpy's answer for an empty history
        return math.nan, math.nan
    arr = [float(v) for v in values]
    med = _median(arr)
    return med, _median([abs(v - med) for v in arr])


class AnomalyDetector:
    """Per-service baselines and anomaly episodes with hysteresis."""

    def __init__(
        self, rule_for: Callable[[str], AnomalyRule], history_minutes: int = 60, close_grace_s: float = 5.0
    ) -> None:
        self.rule_for = rule_for
        self.history = history_minutes
        self.grace = close_grace_s
        # open minutes per service: a new service costs O(1), never a scan of everyone's minutes
        self._open: dict[str, dict[int, _Minute]] = {}
        self._base: dict[str, _Baseline] = {}
        self.active: dict[tuple[str, str], Finding] = {}
        self._by_service: dict[str, dict[str, Finding]] = {}
        self._fresh: set[str] = set()  # services added since the last close pass
        self._upto: int | None = None
        self.ready: set[str] = set()  # services with the history to be judged (see `judgeable`)

    # ---- feeding ---------------------------------------------------------------------------
    def add_partials(self, partials: metrics.Partials) -> None:
        """Fold a batch's per-(service, minute) aggregates into the open minutes."""
        m = partials.minute
        if m.num_rows:
            minutes = m["minute"].cast("int64").to_pylist()
            errors = [a + b for a, b in zip(m["error"].to_pylist(), m["fatal"].to_pylist(), strict=True)]
            for svc, minute, count, err in zip(
                m["service"].to_pylist(), minutes, m["count"].to_pylist(), errors, strict=True
            ):
                self.add_minute(svc, minute // 1_000_000, count, err)
        s = partials.sketch
        if s.num_rows:
            # One add_minute per (service, minute) with all its buckets, in order of first
            # appearance; the rows are grouped with one stable numpy sort, not a Python step each.
            s = s.combine_chunks()
            coded = pc.dictionary_encode(s["service"].chunk(0))
            names = coded.dictionary.to_pylist()
            codes = coded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            minutes = s["minute"].cast(pa.int64()).chunk(0).to_numpy(zero_copy_only=False)
            buckets = s["bucket"].chunk(0).to_numpy(zero_copy_only=False)
            counts = s["count"].chunk(0).to_numpy(zero_copy_only=False)
            order = np.lexsort((minutes, codes))  # stable: a group's rows keep their order
            new_group = np.ones(len(order), dtype=bool)
            new_group[1:] = (codes[order][1:] != codes[order][:-1]) | (minutes[order][1:] != minutes[order][:-1])
            starts = np.flatnonzero(new_group)
            ends = np.append(starts[1:], len(order))
            for k in np.argsort(order[starts], kind="stable").tolist():
                rows = order[starts[k] : ends[k]]
                first = int(rows[0])
                sketch: dict[int, int] = {}
                for bucket, count in zip(buckets[rows].tolist(), counts[rows].tolist(), strict=True):
                    sketch[bucket] = sketch.get(bucket, 0) + count
                self.add_minute(names[codes[first]], int(minutes[first]) // 1_000_000, 0, 0, sketch)

    def add_minute(
        self, service: str, minute_s: int, count: int, errors: int, sketch: dict[int, int] | None = None
    ) -> None:
        """Add counts (and latency sketch buckets) to the minute starting at `minute_s`."""
        base = self._base.get(service)
        if base is not None and base.last_closed is not None and minute_s <= base.last_closed:
            return  # that minute is already part of the baseline: too late to change it
        minutes = self._open.get(service)
        if minutes is None:
            minutes = self._open[service] = {}
        agg = minutes.get(minute_s)
        if agg is None:
            agg = minutes[minute_s] = _Minute()
        agg.count += count
        agg.errors += errors
        for b, c in (sketch or {}).items():
            agg.sketch[b] = agg.sketch.get(b, 0) + c
        if base is None:
            self._base[service] = _Baseline(
                deque(maxlen=self.history), deque(maxlen=self.history), deque(maxlen=self.history)
            )
            self._fresh.add(service)  # its past minutes can close at the next pass

    def close_minutes(self, now: float) -> None:
        """Move every minute that ended at least `grace` seconds ago into the baselines.

        Minutes with no logs from a known service count as volume 0, so a drop is part of the
        history the next judgement sees. Cost: one pass over the services when a minute ends;
        in between, only services first seen since the last pass.
        """
        upto = int((now - self.grace) // 60) * 60 - 60  # start of the newest minute fully over
        if upto == self._upto:
            services: list[str] = [s for s in self._fresh if s in self._base]
        else:
            self._upto = upto
            services = list(self._base)
        self._fresh.clear()
        for service in services:
            self._close_service(service, self._base[service], upto)

    def _close_service(self, service: str, base: _Baseline, upto: int) -> None:
        minutes = self._open.get(service, {})
        if base.last_closed is None:
            if not minutes:
                return
            base.last_closed = min(minutes) - 60
        if base.last_closed >= upto:
            return
        first = max(base.last_closed + 60, upto - 60 * (self.history - 1))
        for minute in range(first, upto + 1, 60):
            agg = minutes.pop(minute, None) or _Minute()
            base.volume.append(float(agg.count))
            if agg.count:
                base.error_rate.append(agg.errors / agg.count)
            if sum(agg.sketch.values()) >= _MIN_LATENCY_SAMPLES:
                p95 = metrics.quantile(list(agg.sketch), list(agg.sketch.values()), 0.95)
                if p95 is not None:
                    base.p95_latency.append(p95)
        base.last_closed = max(base.last_closed, upto)
        base.stats.clear()
        if self.judgeable(service, self.rule_for(service)):
            self.ready.add(service)
        else:
            self.ready.discard(service)
        for m in [m for m in minutes if m <= upto]:  # late data for closed minutes
            del minutes[m]
        if not minutes:
            self._open.pop(service, None)

    def forget(self, service: str) -> None:
        """Drop every trace of `service` (it went idle for good or is over the series cap)."""
        self._open.pop(service, None)
        self._base.pop(service, None)
        self._fresh.discard(service)
        self.ready.discard(service)
        for metric in self._by_service.pop(service, {}):
            self.active.pop((service, metric), None)

    @property
    def services(self) -> int:
        """How many services have a baseline."""
        return len(self._base)

    def baseline_minutes(self, service: str) -> int:
        """Closed minutes of volume history for `service`."""
        base = self._base.get(service)
        return len(base.volume) if base else 0

    # ---- judging ---------------------------------------------------------------------------
    def evaluate(self, service: str, now: float, obs: Observation) -> tuple[list[Finding], list[str]]:
        """Judge the observation; returns (episodes started, metrics whose episode ended)."""
        rule = self.rule_for(service)
        base = self._base.get(service)
        started: list[Finding] = []
        ended: list[str] = []
        judged: dict[str, Finding | None] = {}
        if rule.enabled and base is not None and len(base.volume) >= rule.warmup_minutes:
            med_vol, _ = base.median_mad("volume")
            if med_vol >= rule.min_baseline_volume:
                judged = self._judge(service, now, obs, base, rule)
        for metric in METRICS:
            key = (service, metric)
            finding = judged.get(metric)
            if key in self.active:
                # hysteresis: stay anomalous until the score falls below exit_k
                if finding is None or abs(finding.score) < rule.exit_k:
                    del self.active[key]
                    self._by_service.get(service, {}).pop(metric, None)
                    ended.append(metric)
            elif finding is not None and abs(finding.score) > rule.k:
                self.active[key] = finding
                self._by_service.setdefault(service, {})[metric] = finding
                started.append(finding)
        if not self._by_service.get(service, True):
            del self._by_service[service]
        return started, ended

    def _judge(
        self, service: str, now: float, obs: Observation, base: _Baseline, rule: AnomalyRule
    ) -> dict[str, Finding | None]:
        out: dict[str, Finding | None] = {}
        med, mad = base.median_mad("volume")
        sd = max(_MAD_TO_SD * mad, math.sqrt(med), 0.1 * med, 1.0)
        per_minute = obs.volume * 60.0 / rule.window_seconds  # a shorter window is scaled to a minute
        out["volume"] = self._finding(service, "volume", per_minute, med, sd, rule, len(base.volume), now, both=True)
        if (
            obs.volume >= _MIN_ERROR_SAMPLES
            and obs.errors >= _MIN_ERRORS
            and len(base.error_rate) >= rule.warmup_minutes
        ):
            med, mad = base.median_mad("error_rate")
            p = min(max(med, 0.01), 0.99)
            sd = max(_MAD_TO_SD * mad, math.sqrt(p * (1 - p) / obs.volume), 0.02)
            rate = obs.errors / obs.volume
            out["error_rate"] = self._finding(service, "error_rate", rate, med, sd, rule, len(base.error_rate), now)
        if (
            obs.p95 is not None
            and obs.p95_samples >= _MIN_LATENCY_SAMPLES
            and len(base.p95_latency) >= rule.warmup_minutes
        ):
            med, mad = base.median_mad("p95_latency")
            # a p95 from one minute of samples is noisy: never a band narrower than ±30 % per k
            sd = max(_MAD_TO_SD * mad, 0.3 * med, 1.0)
            out["p95_latency"] = self._finding(
                service, "p95_latency", obs.p95, med, sd, rule, len(base.p95_latency), now
            )
        return out

    @staticmethod
    def _finding(
        service: str,
        metric: str,
        observed: float,
        med: float,
        sd: float,
        rule: AnomalyRule,
        n: int,
        now: float,
        both: bool = False,
    ) -> Finding:
        score = (observed - med) / sd
        if not both:
            score = max(score, 0.0)  # only rises of error rate and latency are problems
        low = max(0.0, med - rule.k * sd)
        high = med + rule.k * sd
        if metric == "error_rate":
            high = min(1.0, high)
        return Finding(service, metric, observed, med, low, high, round(score, 3), n, now)

    def could_start(self, service: str, volume: np.ndarray, errors: np.ndarray, margin: float = 0.01) -> np.ndarray:
        """For windows of `volume` logs and `errors` errors (no latency samples), whether `evaluate`
        against the current baselines could start an episode: vectorised and conservative (a score
        within `margin` of k counts as could), so a False is certain. Replays use it to skip
        seconds where nothing can happen (`alerting/quiet.py`)."""
        out = np.zeros(len(volume), dtype=bool)
        rule = self.rule_for(service)
        base = self._base.get(service)
        if not rule.enabled or base is None or len(base.volume) < rule.warmup_minutes:
            return out
        med, mad = base.median_mad("volume")
        if med < rule.min_baseline_volume:
            return out
        sd = max(_MAD_TO_SD * mad, math.sqrt(med), 0.1 * med, 1.0)
        per_minute = volume * 60.0 / rule.window_seconds
        out |= np.abs((per_minute - med) / sd) > rule.k - margin
        if len(base.error_rate) >= rule.warmup_minutes:
            med, mad = base.median_mad("error_rate")
            p = min(max(med, 0.01), 0.99)
            vol = np.maximum(volume, 1).astype(np.float64)
            sd_e = np.maximum(max(_MAD_TO_SD * mad, 0.02), np.sqrt(p * (1 - p) / vol))
            judged = (volume >= _MIN_ERROR_SAMPLES) & (errors >= _MIN_ERRORS)
            out |= judged & ((errors / vol - med) / sd_e > rule.k - margin)
        return out

    def judgeable(self, service: str, rule: AnomalyRule) -> bool:
        """Whether `service` has the history to be judged at all (warm-up, minimum volume)."""
        base = self._base.get(service)
        if not rule.enabled or base is None or len(base.volume) < rule.warmup_minutes:
            return False
        return base.median_mad("volume")[0] >= rule.min_baseline_volume

    def refresh_ready(self) -> None:
        """Recompute `ready` for every service (after the rules changed)."""
        self.ready = {s for s in self._base if self.judgeable(s, self.rule_for(s))}

    @property
    def active_services(self) -> set[str]:
        """Services with an anomaly episode under way."""
        return set(self._by_service)

    def is_active(self, service: str) -> bool:
        """Whether any metric of `service` is in an anomaly episode."""
        return bool(self._by_service.get(service))

    def findings(self, service: str) -> list[Finding]:
        """The active findings of `service` (one per metric in an episode)."""
        return list(self._by_service.get(service, {}).values())


def anomaly_candidate(detector: AnomalyDetector, service: str, rule: AnomalyRule) -> Candidate:
    """The `anomaly` rule outcome of a service: breaching with its strongest active finding.

    Shared by the live evaluator and the event-time replay, so both alert on the same thing.
    """
    active = detector.findings(service)
    if not active:
        return Candidate("anomaly", service, False, None, None, rule.severity, "")
    top = max(active, key=lambda f: abs(f.score))
    return Candidate(
        "anomaly",
        service,
        True,
        round(top.observed, 6),
        round(top.high, 6),
        rule.severity,
        top.description,
        labels={"metric": top.metric},
    )


@dataclass(frozen=True, slots=True)
class RateJump:
    """A template whose count in a closed minute is far above its own per-minute baseline."""

    template_id: str
    minute_s: int
    observed: int
    expected: float


class TemplateRates:
    """Per-template per-minute counts with a mean baseline; reports jumps of `factor` × or more."""

    def __init__(
        self,
        factor: float = 10.0,
        history_minutes: int = 60,
        warmup_minutes: int = 10,
        min_count: int = 20,
        close_grace_s: float = 5.0,
    ) -> None:
        self.factor = factor
        self.history = history_minutes
        self.warmup = warmup_minutes
        self.min_count = min_count
        self.grace = close_grace_s
        self._open: dict[str, dict[int, int]] = {}  # per template: a new one costs O(1)
        self._hist: dict[str, deque[int]] = {}
        self._closed: dict[str, int] = {}
        self._fresh: set[str] = set()
        self._upto: int | None = None

    def add(self, template_id: str, minute_s: int, n: int = 1) -> None:
        """Count `n` occurrences of a template in the minute starting at `minute_s`."""
        last = self._closed.get(template_id)
        if last is not None and minute_s <= last:
            return
        minutes = self._open.setdefault(template_id, {})
        minutes[minute_s] = minutes.get(minute_s, 0) + n
        if template_id not in self._hist:
            self._hist[template_id] = deque(maxlen=self.history)
            self._fresh.add(template_id)

    def close(self, now: float) -> list[RateJump]:
        """Close finished minutes; returns the templates that jumped in them."""
        upto = int((now - self.grace) // 60) * 60 - 60
        jumps: list[RateJump] = []
        if upto == self._upto:
            tids = [t for t in self._fresh if t in self._hist]
        else:
            self._upto = upto
            tids = list(self._hist)
        self._fresh.clear()
        for tid in tids:
            hist = self._hist[tid]
            minutes = self._open.get(tid, {})
            last = self._closed.get(tid)
            if last is None:
                if not minutes:
                    continue
                last = min(minutes) - 60
            if last >= upto:
                continue
            first = max(last + 60, upto - 60 * (self.history - 1))
            for minute in range(first, upto + 1, 60):
                n = minutes.pop(minute, 0)
                if len(hist) >= self.warmup:
                    expected = sum(hist) / len(hist)
                    if n >= self.min_count and n > self.factor * max(expected, 0.1):
                        jumps.append(RateJump(tid, minute, n, round(expected, 3)))
                hist.append(n)
            self._closed[tid] = max(last, upto)
            for m in [m for m in minutes if m <= upto]:
                del minutes[m]
            if not minutes:
                self._open.pop(tid, None)
        return jumps
