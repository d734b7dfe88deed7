"""Quiet seconds of an event-time replay: the seconds where the per-second tick changes nothing.

`replay()` drives the live evaluator one tick per second of data. While the engine waits on no
timer (no pending alert, no damped resolve, no held notification, no silence) and no anomaly
episode is under way, a tick can only leave a trace when a rule changes its mind: a key without
an alert starts breaching, a firing key stops breaching, an anomaly could start, or the idle check
could forget a service. Everything else a tick does — window sums, candidates the engine ignores,
refreshing the value of an alert that keeps firing — overwrites state and leaves nothing behind.

`QuietSeconds` precomputes, vectorised over every second, the window sums each threshold rule
sees (cumulative sums of the per-second counts, cut to the windows' horizon) and the last second
each service sent logs, and from them a *conservative* mask of seconds that might act: a second
outside it is certainly quiet (margins absorb float rounding), one inside it gets the full tick.
Anomaly scores are judged against the baselines in force at each second (they change only when a
minute closes, so they are recomputed per minute). The replay skips quiet seconds, and before the
next full tick refreshes firing alerts as the last skipped second would have, so its results are
identical to ticking every second (tests/analyze/test_analyze_detection.py checks this).
"""

from __future__ import annotations

import numpy as np

from loglens.alerting.evaluator import Evaluator
from loglens.config import ErrorRateRule, VolumeRule
from loglens.detect.rules import THRESHOLD_RULES, threshold_rule

EPS = 1e-6  # the replay's clock stands at the end of each second: s + 1 - EPS
MAX_CELLS = 4_000_000  # services × seconds; a wider replay ticks every second instead
_MARGIN = 1e-3  # seconds/ratio slack: a value this close to a threshold is "might act"


def clock_at(second: int) -> float:
    """The replay's clock during `second`."""
    return second + 1 - EPS


class QuietSeconds:
    """Which seconds of a replay over [start, end] might change the evaluator's observable state."""

    def __init__(
        self,
        ev: Evaluator,
        start: int,
        end: int,
        services: list[str],
        secs: np.ndarray,
        counts: np.ndarray,
        errors: np.ndarray,
    ) -> None:
        self.ev = ev
        self.start, self.end = start, end
        self.names = sorted(set(services))
        self.row = {s: k for k, s in enumerate(self.names)}
        n, t = len(self.names), end - start + 1
        idx = np.fromiter((self.row[s] for s in services), dtype=np.int64, count=len(services))
        pos = secs - start
        total = np.zeros((n, t), dtype=np.int64)
        errs = np.zeros((n, t), dtype=np.int64)
        np.add.at(total, (idx, pos), counts)
        np.add.at(errs, (idx, pos), errors)
        has = np.zeros((n, t), dtype=bool)
        has[idx, pos] = True
        self._ctot = np.zeros((n, t + 1), dtype=np.int64)
        self._cerr = np.zeros((n, t + 1), dtype=np.int64)
        np.cumsum(total, axis=1, out=self._ctot[:, 1:])
        np.cumsum(errs, axis=1, out=self._cerr[:, 1:])
        # last second (offset) with logs at or before each second, -1 = not seen yet
        self.last = np.maximum.accumulate(np.where(has, np.arange(t), -1), axis=1)
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._possible: dict[str, np.ndarray] = {}  # rule -> (n, t) might breach
        self._certain: dict[str, np.ndarray] = {}  # rule -> (n, t) surely breaches
        self._build_threshold_masks()

    @staticmethod
    def fits(services: int, seconds: int) -> bool:
        """Whether a replay of this size gets the quiet-second path (memory is services × seconds)."""
        return services * seconds <= MAX_CELLS

    def window(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(logs, errors) per service and second over the window of `width` seconds ending there,
        as `SlidingWindows.counts` sees it (never wider than the windows' horizon)."""
        w = max(1, min(int(width), self.ev.windows.horizon_s))
        cached = self._windows.get(w)
        if cached is None:
            t = self.end - self.start + 1
            hi = np.arange(1, t + 1)
            lo = np.maximum(hi - w, 0)
            cached = self._windows[w] = (self._ctot[:, hi] - self._ctot[:, lo], self._cerr[:, hi] - self._cerr[:, lo])
        return cached

    def _build_threshold_masks(self) -> None:
        n, t = len(self.names), self.end - self.start + 1
        silent = np.arange(t)[None, :] - self.last  # seconds since the last logs (valid where seen)
        seen = self.last >= 0
        for name in THRESHOLD_RULES:
            possible = np.zeros((n, t), dtype=bool)
            certain = np.zeros((n, t), dtype=bool)
            for k, svc in enumerate(self.names):
                rule = threshold_rule(self.ev.alerts, name, svc)
                if not rule.enabled:
                    continue
                if isinstance(rule, ErrorRateRule):
                    tot, err = (a[k] for a in self.window(rule.window_seconds))
                    rate = err / np.maximum(tot, 1)
                    enough = tot >= rule.min_events
                    possible[k] = enough & (rate > rule.threshold - _MARGIN)
                    certain[k] = enough & (rate > rule.threshold + _MARGIN)
                elif isinstance(rule, VolumeRule):
                    tot = self.window(rule.window_seconds)[0][k]
                    possible[k] = tot > rule.threshold - _MARGIN
                    certain[k] = tot > rule.threshold + _MARGIN
                else:
                    possible[k] = seen[k] & (silent[k] > rule.threshold_seconds - _MARGIN)
                    certain[k] = seen[k] & (silent[k] > rule.threshold_seconds + _MARGIN)
            self._possible[name], self._certain[name] = possible, certain

    def _acting(self, a: int, b: int, firing: frozenset[tuple[str, str]]) -> np.ndarray:
        """Seconds (offsets a..b-1) where a threshold rule or an anomaly might change state."""
        out = np.zeros(b - a, dtype=bool)
        if any(rule not in THRESHOLD_RULES or svc not in self.row for rule, svc in firing):
            out[:] = True  # e.g. an anomaly alert with no episode under way: about to clear
            return out
        for name in THRESHOLD_RULES:
            rows = self._possible[name][:, a:b]
            keys = [self.row[svc] for rule, svc in firing if rule == name]
            if keys:
                # a key without an alert acts when it might breach, a firing one when it might stop
                rows = rows.copy()
                rows[keys] = ~self._certain[name][keys, a:b]
            out |= rows.any(axis=0)
        detector = self.ev.detector
        for svc in detector.ready:
            k = self.row.get(svc)
            if k is None:
                continue
            vol, err = self.window(detector.rule_for(svc).window_seconds)
            out |= detector.could_start(svc, vol[k, a:b], err[k, a:b])
        return out

    def _could_expire(self, at: int) -> bool:
        """Whether the idle check at second offset `at` might forget a service."""
        idle_s = self.ev.alerts.series_idle_seconds
        if idle_s <= 0:
            return False
        last = self.last[:, at]
        return bool(((last >= 0) & (at - last > idle_s - 1 - _MARGIN)).any())

    def first_acting(self, second: int, firing: frozenset[tuple[str, str]]) -> int:
        """The first second at or after `second` that needs the full tick (end + 1: none).

        Walks minute by minute, closing the anomaly baselines as the ticks would (so each second is
        judged against the baselines in force then) and moving the idle check on past quiet seconds.
        """
        ev, grace = self.ev, self.ev.detector.grace
        s = second
        while s <= self.end:
            ev.detector.close_minutes(clock_at(s))
            minute = int((clock_at(s) - grace) // 60)
            b = s + 1
            while b <= self.end and int((clock_at(b) - grace) // 60) == minute:
                b += 1  # [s, b): one set of baselines
            acting = self._acting(s - self.start, b - self.start, firing)
            hits = np.flatnonzero(acting)
            stop = s + int(hits[0]) if hits.size else b
            for d in range(s, stop):
                if ev.expiry_due(clock_at(d)):
                    if self._could_expire(d - self.start):
                        return d
                    ev.skip_expiry(clock_at(d))
            if hits.size:
                return stop
            s = b
        return self.end + 1
